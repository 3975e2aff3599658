"""Conversion time and inference speed of generated models against Keras, same CPU, same run.

For ResNet50, MobileNetV2, EfficientNetB0 and DenseNet121 (keras.applications, weights=None,
224x224x3, 1000 classes) it prints:

* conversion time of ``kerastorch_magic.convert`` (the Keras model is built beforehand and not
  counted): the first call in the process and the median of the following ones;
* inference time at batch 8 on the CPU: the generated module (``torch.inference_mode``,
  channels-first input) against Keras's fastest of ``model(x, training=False)`` (eager) and
  ``model.predict_on_batch(x)`` (compiled ``tf.function``), medians, and their ratio
  (Keras time / PyTorch time: >= 1.0 means the port is at least as fast).

Targets: ResNet50 converts in <= 0.5 s; the generated model runs at >= 1.0x Keras's speed.

    .venv/bin/python benchmarks/convert.py [--models ResNet50 ...] [--runs 5] [--profile]

``--profile`` prints the cProfile hot spots of one conversion per model.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ["ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121"]
CONVERT_TARGET_S = 0.5  # ResNet50
SPEED_TARGET = 1.0
BATCH = 8


def _median_time(function, runs: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _profile(function, top: int = 18) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    function()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per measurement (default 5)")
    parser.add_argument("--profile", action="store_true", help="print cProfile hot spots of a conversion")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf
    import torch

    import kerastorch_magic as k2t

    print(
        f"CPU threads: torch {torch.get_num_threads()}, TF intra-op "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}; "
        f"os.cpu_count() {os.cpu_count()}; batch {BATCH}, 224x224x3, weights=None"
    )
    rows = []
    for name in args.models:
        keras.backend.clear_session()
        model = getattr(keras.applications, name)(weights=None)
        started = time.perf_counter()
        conversion = k2t.convert(model)
        first = time.perf_counter() - started
        convert_s = _median_time(lambda: k2t.convert(model), args.runs, warmup=0)
        if args.profile:
            print(f"--- cProfile of one conversion of {name} (cumulative) ---")
            print(_profile(lambda: k2t.convert(model)))

        module = conversion.build()
        x = np.random.default_rng(0).normal(0, 1, (BATCH, 224, 224, 3)).astype("float32")
        x_torch = torch.from_numpy(np.ascontiguousarray(conversion.inputs[0].to_torch_layout(x)))
        x_tf = tf.constant(x)

        def run_torch():
            with torch.inference_mode():
                module(x_torch)

        torch_s = _median_time(run_torch, args.runs)
        eager_s = _median_time(lambda: model(x_tf, training=False), args.runs)
        compiled_s = _median_time(lambda: model.predict_on_batch(x), args.runs)
        keras_s = min(eager_s, compiled_s)
        with torch.inference_mode():
            out = module(x_torch).numpy()
        expected = np.asarray(model(x_tf, training=False))
        error = float(np.max(np.abs(out - expected)) / (np.max(np.abs(expected)) or 1.0))
        rows.append((name, first, convert_s, torch_s, eager_s, compiled_s, keras_s / torch_s, error))
        print(
            f"{name}: convert first {first:.3f} s, median {convert_s:.3f} s; inference torch "
            f"{torch_s * 1e3:.1f} ms, Keras eager {eager_s * 1e3:.1f} ms, predict_on_batch "
            f"{compiled_s * 1e3:.1f} ms -> {keras_s / torch_s:.2f}x (rel err {error:.1e})",
            flush=True,
        )

    print()
    header = (
        f"{'model':16s} {'convert 1st s':>13s} {'convert s':>9s} {'torch ms':>9s} "
        f"{'keras eager ms':>14s} {'keras predict ms':>16s} {'speed ratio':>11s} {'rel err':>8s}"
    )
    print(header)
    for name, first, convert_s, torch_s, eager_s, compiled_s, ratio, error in rows:
        print(
            f"{name:16s} {first:13.3f} {convert_s:9.3f} {torch_s * 1e3:9.1f} {eager_s * 1e3:14.1f} "
            f"{compiled_s * 1e3:16.1f} {ratio:10.2f}x {error:8.1e}"
        )
    print()
    for name, _, convert_s, *_ in rows:
        if name == "ResNet50":
            verdict = "met" if convert_s <= CONVERT_TARGET_S else "MISSED"
            print(f"target: ResNet50 converts in <= {CONVERT_TARGET_S} s: {convert_s:.3f} s ({verdict})")
    slowest = min(rows, key=lambda row: row[6])
    verdict = "met" if slowest[6] >= SPEED_TARGET else "MISSED"
    print(
        f"target: generated model >= {SPEED_TARGET:.1f}x Keras's inference speed: worst "
        f"{slowest[6]:.2f}x ({slowest[0]}) ({verdict})"
    )


if __name__ == "__main__":
    main()
