"""Conversion time and inference speed of generated models against Keras, same CPU, same run.

For ResNet50, MobileNetV2, EfficientNetB0 and DenseNet121 (keras.applications, weights=None,
224x224x3, 1000 classes) it prints:

* conversion time of ``kerastorch_magic.convert`` (the Keras model is built beforehand and not
  counted; the result includes the formatted source): the first call in the process and the
  median of the following ones;
* inference time at batch 8 on the CPU, medians of interleaved runs (every variant once per
  round, so a busy machine slows them alike):
  - ``torch``: the generated module as built (``torch.inference_mode``, NCHW-contiguous input);
  - ``torch NHWC``: the same module in torch's channels-last memory format
    (``module.to(memory_format=torch.channels_last)``, and the input converted inside the timed
    call), the layout oneDNN's CPU convolutions prefer: same results, no code change;
  - Keras: ``model(x, training=False)`` (eager) and ``model.predict_on_batch(x)`` (compiled
    ``tf.function``); the faster one is the reference.
  Ratio = Keras time / PyTorch time: >= 1.0 means the port is at least as fast.

Targets: ResNet50 converts in <= 0.5 s; the generated model runs at >= 1.0x Keras's speed.

    .venv/bin/python benchmarks/convert.py [--models ResNet50 ...] [--runs 7] [--profile]

``--profile`` prints the cProfile hot spots of one conversion per model.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import time

from _common import interleaved  # first: quiets TensorFlow, makes the package importable

MODELS = ["ResNet50", "MobileNetV2", "EfficientNetB0", "DenseNet121"]
CONVERT_TARGET_S = 0.5  # ResNet50
SPEED_TARGET = 1.0
BATCH = 8


def _profile(function, top: int = 18) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    function()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def measure(name: str, runs: int, profile: bool) -> tuple:
    """Conversion and inference figures of one application (see the module docstring)."""
    import keras
    import numpy as np
    import tensorflow as tf
    import torch

    import kerastorch_magic as k2t

    keras.backend.clear_session()
    model = getattr(keras.applications, name)(weights=None)

    def convert():
        return k2t.convert(model).code  # the code is part of the result: render it too

    started = time.perf_counter()
    convert()
    first = time.perf_counter() - started
    convert_s = statistics.median(interleaved({"convert": convert}, runs, warmup=0).values())
    if profile:
        print(f"--- cProfile of one conversion of {name} (cumulative) ---")
        print(_profile(convert))

    conversion = k2t.convert(model)
    module = conversion.build()
    module_nhwc = conversion.build().to(memory_format=torch.channels_last)
    x = np.random.default_rng(0).normal(0, 1, (BATCH, 224, 224, 3)).astype("float32")
    x_torch = torch.from_numpy(np.ascontiguousarray(conversion.inputs[0].to_torch_layout(x)))
    x_tf = tf.constant(x)

    def run_torch():
        with torch.inference_mode():
            return module(x_torch)

    def run_torch_nhwc():
        with torch.inference_mode():
            return module_nhwc(x_torch.contiguous(memory_format=torch.channels_last))

    medians = interleaved(
        {
            "torch": run_torch,
            "torch NHWC": run_torch_nhwc,
            "keras eager": lambda: model(x_tf, training=False),
            "keras predict": lambda: model.predict_on_batch(x),
        },
        runs,
    )
    keras_s = min(medians["keras eager"], medians["keras predict"])
    expected = np.asarray(model(x_tf, training=False))
    errors = []
    for run in (run_torch, run_torch_nhwc):
        out = run().numpy()
        errors.append(float(np.max(np.abs(out - expected)) / (np.max(np.abs(expected)) or 1.0)))
    ratios = (keras_s / medians["torch"], keras_s / medians["torch NHWC"])
    print(
        f"{name}: convert first {first:.3f} s, median {convert_s:.3f} s; inference "
        + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in medians.items())
        + f" -> {ratios[0]:.2f}x ({ratios[1]:.2f}x NHWC); rel err {max(errors):.1e}",
        flush=True,
    )

    return name, first, convert_s, medians, ratios, max(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--runs", type=int, default=7, help="timed rounds per measurement (default 7)")
    parser.add_argument("--profile", action="store_true", help="print cProfile hot spots of a conversion")
    args = parser.parse_args()

    import tensorflow as tf
    import torch

    print(
        f"CPU threads: torch {torch.get_num_threads()}, TF intra-op "
        f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}; "
        f"os.cpu_count() {os.cpu_count()}; batch {BATCH}, 224x224x3, weights=None; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rows = [measure(name, args.runs, args.profile) for name in args.models]
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) + 0.5:  # this run itself keeps every core busy
        print(
            f"\nWARNING: load average {load:.2f} at the end: other processes shared the CPU; torch's "
            "OpenMP threads suffer far more from that than TF's pool: rerun on an idle machine."
        )
    print()
    print(
        f"{'model':16s} {'convert 1st s':>13s} {'convert s':>9s} {'torch ms':>9s} {'NHWC ms':>8s} "
        f"{'keras eager ms':>14s} {'keras predict ms':>16s} {'ratio':>6s} {'NHWC ratio':>10s} {'rel err':>8s}"
    )
    for name, first, convert_s, medians, ratios, error in rows:
        print(
            f"{name:16s} {first:13.3f} {convert_s:9.3f} {medians['torch'] * 1e3:9.1f} "
            f"{medians['torch NHWC'] * 1e3:8.1f} {medians['keras eager'] * 1e3:14.1f} "
            f"{medians['keras predict'] * 1e3:16.1f} {ratios[0]:5.2f}x {ratios[1]:9.2f}x {error:8.1e}"
        )
    print()
    for name, _, convert_s, *_ in rows:
        if name == "ResNet50":
            verdict = "met" if convert_s <= CONVERT_TARGET_S else "MISSED"
            print(f"target: ResNet50 converts in <= {CONVERT_TARGET_S} s: {convert_s:.3f} s ({verdict})")
    for label, index in (("as built", 0), ("NHWC memory format", 1)):
        worst = min(rows, key=lambda row: row[4][index])
        verdict = "met" if worst[4][index] >= SPEED_TARGET else "MISSED"
        print(
            f"target: generated model >= {SPEED_TARGET:.1f}x Keras's inference speed ({label}): "
            f"worst {worst[4][index]:.2f}x ({worst[0]}) ({verdict})"
        )


if __name__ == "__main__":
    main()
