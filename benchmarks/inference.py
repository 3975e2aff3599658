"""Inference speed of converted keras.applications models against Keras/TF and tf2onnx + onnx2torch.

For each model (default MobileNetV3Small and ResNet50, weights=None, 224x224, batch 8, float32),
in one process and on the same CPU threads, timed in cycles that call each contender once:

* ``keras``: Keras/TF ``model.predict_on_batch``;
* ``default``: the class ``kerastorch_magic.convert`` generates (trainable, BatchNorm kept);
* ``folded``: ``convert(..., fold_batchnorm=True)``, the deployment variant;
* ``onnx2torch``: ``model.export(..., format="onnx")`` (tf2onnx) loaded by ``onnx2torch.convert``,
  a ``torch.fx.GraphModule`` (tf2onnx folds BatchNorm into the convolutions too);
* with ``--compile``: ``folded`` under ``torch.compile`` (inductor; compiling takes minutes on a
  busy 2-core machine).

Both generated classes copy their (N, C, H, W) input into ``torch.channels_last`` memory first
(oneDNN's native layout: no reorders around each convolution); onnx2torch's graph gets the same
strides implicitly, as it permutes Keras's NHWC input.

Every torch contender runs under ``torch.inference_mode`` and is checked against Keras first
(relative error of the logits printed). It prints each contender's fastest and median call and
the speed ratios the targets are about, two ways: of the fastest calls (on a CPU other processes
share, the fastest of many calls is the one they disturbed least), and the median of paired
ratios: the contenders are called in turn, one call each per cycle, and each cycle gives a ratio
of neighbouring calls, so a slow spell slows both sides of a ratio alike. The load average
before and after is printed; on a shared 2-core VM single figures still move by about 10%.

tf2onnx and onnx2torch are not project dependencies: they live in the benchmark's own venv,
``benchmarks/.venv-onnx``, layered over the project venv (a ``.pth`` file), created by::

    .venv/bin/python benchmarks/inference.py --setup-onnx

and used automatically when the script runs from the project venv. ``onnx2torch`` imports
torchvision for its NMS/RoIAlign converters only, which these models do not use; PyPI's
torchvision wheels do not load against the CPU build of torch, so a stub stands in for it.

    .venv/bin/python benchmarks/inference.py [--models MobileNetV3Small ResNet50] [--batch 8]
        [--size 224] [--cycles 15] [--threads N] [--compile] [--no-onnx]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# torch's OpenMP threads spin-waiting between parallel regions (the default) starve TF's threads
# and each other on a shared CPU; passive waiting is the fair setting here (see attention.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # also when re-run from the onnx venv

from _common import timings  # noqa: E402

ONNX_VENV = ROOT / "benchmarks" / ".venv-onnx"
ONNX_PACKAGES = ["tf2onnx", "onnx2torch", "onnx"]


def setup_onnx_venv() -> None:
    """Create ``benchmarks/.venv-onnx``: the project venv plus tf2onnx and onnx2torch."""
    subprocess.run([sys.executable, "-m", "venv", str(ONNX_VENV)], check=True)
    site = ONNX_VENV / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    project_site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (site / "project-venv.pth").write_text(project_site + "\n")
    # --no-deps: tf2onnx pins an old protobuf; TensorFlow's own (from the project venv) works.
    pip = [str(ONNX_VENV / "bin" / "python"), "-m", "pip", "install", "--no-deps", *ONNX_PACKAGES]
    subprocess.run(pip, check=True)


def _has_onnx2torch() -> bool:
    import importlib.util

    return (
        importlib.util.find_spec("onnx2torch") is not None and importlib.util.find_spec("tf2onnx") is not None
    )


def _import_onnx2torch():
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - absent, or a wheel built for another torch: stub it
        stub = types.ModuleType("torchvision")
        stub.ops = types.ModuleType("torchvision.ops")
        stub.ops.roi_align = stub.ops.nms = stub.ops.box_convert = None
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, stub.ops
    import onnx
    import onnx2torch

    return onnx, onnx2torch


def _onnx_module(model, sample):
    """tf2onnx's export of ``model`` as an onnx2torch GraphModule (eval mode)."""
    onnx, onnx2torch = _import_onnx2torch()
    model(sample[:1])  # Keras's exporter refuses a model that was never called
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.onnx")
        model.export(path, format="onnx", verbose=False)
        return onnx2torch.convert(onnx.load(path)).eval()


def _contenders(name: str, args) -> tuple[dict, dict]:
    """name -> zero-argument callable, and name -> max abs difference from Keras."""
    import keras
    import numpy as np
    import torch

    import kerastorch_magic as k2t

    keras.utils.set_random_seed(0)
    options = {"weights": None, "input_shape": (args.size, args.size, 3), "classifier_activation": None}
    model = getattr(keras.applications, name)(**options)  # logits: differences show
    data = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    expected = model.predict_on_batch(data)
    runs, errors = {"keras": lambda: model.predict_on_batch(data)}, {}
    default = k2t.convert(model)
    folded = k2t.convert(model, fold_batchnorm=True)
    x = torch.from_numpy(np.ascontiguousarray(default.inputs[0].to_torch_layout(data)))
    modules = {"default": (default.build(), x), "folded": (folded.build(), x)}
    if not args.no_onnx:
        modules["onnx2torch"] = (_onnx_module(model, data), torch.from_numpy(data))  # takes NHWC
    if args.compile:
        modules["folded compiled"] = (torch.compile(folded.build()), x)
    for label, (module, tensor) in modules.items():
        with torch.inference_mode():
            out = module(tensor)
        errors[label] = float(np.abs(out.numpy() - expected).max() / np.abs(expected).max())

        def run(module=module, tensor=tensor):
            with torch.inference_mode():
                module(tensor)

        runs[label] = run
    return runs, errors


def _paired_ratio(reference: list[float], contender: list[float]) -> float:
    """Median over cycles of reference time / contender time (> 1: the contender is faster)."""
    return statistics.median(r / c for r, c in zip(reference, contender))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["MobileNetV3Small", "ResNet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cycles", type=int, default=15, help="timed calls per contender, in turn")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads, both libraries")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (slow to compile)")
    parser.add_argument("--no-onnx", action="store_true", help="leave out tf2onnx + onnx2torch")
    parser.add_argument("--setup-onnx", action="store_true", help="create benchmarks/.venv-onnx and exit")
    args = parser.parse_args()
    if args.setup_onnx:
        setup_onnx_venv()
        return 0
    here = Path(sys.executable).absolute()
    if not args.no_onnx and not _has_onnx2torch() and ONNX_VENV.is_dir() and ONNX_VENV not in here.parents:
        python = ONNX_VENV / "bin" / "python"
        return subprocess.run([str(python), __file__, *sys.argv[1:]]).returncode  # same run, its venv
    if not args.no_onnx and not _has_onnx2torch():
        print("tf2onnx/onnx2torch not installed (run with --setup-onnx first): leaving them out")
        args.no_onnx = True

    import tensorflow as tf
    import torch

    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    load_before = os.getloadavg()
    for name in args.models:
        runs, errors = _contenders(name, args)
        for run in runs.values():  # warm-up: TF graph tracing, allocator, oneDNN primitives, compile
            timings(run, 2)
        times: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(args.cycles):  # cycles: every contender once, in turn
            for label, run in runs.items():
                times[label] += timings(run, 1)
        best = {label: min(values) * 1e3 for label, values in times.items()}
        print(f"\n{name}: batch {args.batch}, {args.size}x{args.size}, {args.threads} threads, "
              f"{args.cycles} cycles of one call each; fastest / median")  # fmt: skip
        for label, values in times.items():
            error = f"  (relative error {errors[label]:.1e})" if label in errors else ""
            median = statistics.median(values) * 1e3
            print(f"  {label:22s} {best[label]:8.1f} / {median:8.1f} ms{error}")
        for label in [label for label in best if label != "keras"]:
            others = [other for other in ("keras", "onnx2torch") if other in best and other != label]
            ratios = [
                f"{best[o] / best[label]:.2f}x {o} (paired {_paired_ratio(times[o], times[label]):.2f}x)"
                for o in others
            ]
            print(f"  {label} speed: " + ", ".join(ratios))
    load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): before {load_before[0]:.1f} {load_before[1]:.1f} "
          f"{load_before[2]:.1f}, after {load_after[0]:.1f} {load_after[1]:.1f} {load_after[2]:.1f} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
