"""Compare ResNet50 and EfficientNetV2L on a CUDA GPU: the one prepared run for a lent device.

Prints, per model: conversion time, the generated model's forward time next to Keras's, the
comparison's time and peak GPU memory as ratios to one plain forward pass, and the verdict.
Keras runs on its torch backend when TensorFlow is absent (the GPU machine has only PyTorch).

    python benchmarks/gpu_compare.py [--size 224] [--batch 8] [--device cuda]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

if importlib.util.find_spec("tensorflow") is None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from exactness import randomise_weights  # noqa: E402

import kerastorch_magic as k2t  # noqa: E402


def timed(function, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` calls (after one warm-up), synchronising CUDA."""
    function()
    best = float("inf")
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(function, device: str) -> int:
    if not device.startswith("cuda"):
        return 0
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    function()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def run(name: str, size: int, batch: int, device: str) -> None:
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))
    randomise_weights(model)
    start = time.perf_counter()
    conversion = k2t.convert(model)
    convert_s = time.perf_counter() - start
    module = conversion.build(device)
    inputs = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    x = torch.from_numpy(conversion.inputs[0].to_torch_layout(inputs).copy()).to(device)

    def torch_forward():
        with torch.no_grad():
            module(x)

    def keras_forward():
        keras.ops.convert_to_numpy(model(inputs, training=False))

    torch_s, keras_s = timed(torch_forward), timed(keras_forward)
    forward_bytes = peak_memory(torch_forward, device)
    result = {}

    def comparison():
        result["cmp"] = k2t.compare(model, conversion, inputs=inputs, device=device)

    compare_bytes = peak_memory(comparison, device)
    compare_s = timed(comparison, repeat=1)
    cmp = result["cmp"]
    frame = cmp.to_dataframe()
    print(
        f"{name} {size}x{size} batch {batch} on {device} ({torch.cuda.get_device_name() if 'cuda' in device else 'cpu'}), "
        f"keras backend {keras.backend.backend()}: {len(frame)} layers compared, ok={cmp.ok}, "
        f"max rel diff {frame['rel_diff'].max():.3g}, first failure {getattr(cmp.first_failure, 'keras_layer', None)}"
    )
    print(
        f"  convert {convert_s:.2f} s | forward torch {torch_s * 1e3:.1f} ms vs keras {keras_s * 1e3:.1f} ms "
        f"(torch speed {keras_s / torch_s:.2f}x keras)"
    )
    if forward_bytes:
        print(
            f"  compare {compare_s:.2f} s = {compare_s / torch_s:.1f}x one torch forward | peak GPU memory "
            f"{compare_bytes / 2**20:.0f} MiB = {compare_bytes / forward_bytes:.2f}x one forward "
            f"({forward_bytes / 2**20:.0f} MiB)"
        )
    else:
        print(f"  compare {compare_s:.2f} s = {compare_s / torch_s:.1f}x one torch forward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", nargs="*", default=["ResNet50", "EfficientNetV2L"])
    args = parser.parse_args()
    for name in args.models:
        run(name, args.size, args.batch, args.device)


if __name__ == "__main__":
    main()
