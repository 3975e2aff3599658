"""Time and peak memory of ``kerastorch_magic.compare`` against one plain forward pass.

For each model (keras.applications, ``weights=None``), three fresh subprocesses measure, from the
same starting point (model built, converted, input ready):

* ``keras``: one eager ``model(x, training=False)`` (the way compare runs Keras);
* ``torch``: one forward of ``conversion.build()`` under ``torch.no_grad()``;
* ``compare``: ``compare(model, conversion, inputs=x)`` (both forwards, the statistics, the
  previews; it builds its own traced module, whose weights count in its memory).

Peak memory is the resident set size above the starting point: Linux's high-water mark (VmHWM,
reset through ``/proc/self/clear_refs``) where the kernel supports it, else a 2 ms RSS sampler.
TensorFlow's and torch's C allocations are included (tracemalloc would miss them). On CUDA the
peak of torch's allocator is reported too. Times: the first call (what a user waits for) and the
median of the next ``--repeat`` calls. Ratios are to the plain forward passes of the same run.

    .venv/bin/python benchmarks/compare.py [--models ResNet50 EfficientNetV2L] [--size 224]
        [--batch 1] [--device cpu] [--repeat 2]

``--once`` instead runs one comparison per model in this process, end to end and isolated, and
prints verdicts, devices, times (with the drift check's share when one ran) and (on CUDA) peak GPU
memory: the check to run on a GPU machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# -- memory probes ---------------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRss:
    """Peak RSS (bytes) over a ``with`` block, relative to its start."""

    def __enter__(self):
        gc.collect()
        self.start = self._rss()
        self.hwm = False
        try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            hwm = _status_kib("VmHWM")
            self.hwm = hwm is not None and abs(hwm * 1024 - self.start) < 64 * 1024 * 1024
        except OSError:
            self.hwm = False
        self.samples = [self.start]
        self._stop = threading.Event()
        if not self.hwm:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.samples.append(self._rss())
            time.sleep(0.002)

    @staticmethod
    def _rss() -> int:
        kib = _status_kib("VmRSS")
        if kib is not None:
            return kib * 1024
        import psutil

        return psutil.Process().memory_info().rss

    def __exit__(self, *exc):
        self._stop.set()
        if self.hwm:
            self.peak = _status_kib("VmHWM") * 1024
        else:
            self._thread.join()
            self.peak = max(self.samples + [self._rss()])
        self.delta = max(0, self.peak - self.start)
        self.method = "VmHWM" if self.hwm else "sampled RSS"
        return False


# -- one measurement (a subprocess) -----------------------------------------------------------------
def worker(model_name: str, mode: str, size: int, batch: int, device: str, repeat: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np
    import torch

    import kerastorch_magic as k2t

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    model = getattr(keras.applications, model_name)(weights=None, input_shape=(size, size, 3))
    conversion = k2t.convert(model)
    x = np.random.default_rng(0).standard_normal((batch, size, size, 3)).astype("float32")
    cuda = device.startswith("cuda")
    result = {"model": model_name, "mode": mode, "layers": len(conversion.traces)}

    if mode == "keras":

        def call():
            out = model(x, training=False)
            np.asarray(keras.ops.convert_to_numpy(out))

    elif mode == "torch":
        with PeakRss() as build:
            module = conversion.build(device=device)
        result["build_bytes"] = build.delta
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)

        def call():
            with torch.no_grad():
                out = module(xt)
            if cuda:
                torch.cuda.synchronize()
            out.cpu()

    else:
        last = {}

        def call():
            last["comparison"] = k2t.compare(model, conversion, inputs=x, device=device)

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    started = time.perf_counter()
    with PeakRss() as memory:
        call()
    result["first_s"] = time.perf_counter() - started
    result["peak_bytes"] = memory.delta
    result["memory_method"] = memory.method
    if cuda:
        result["gpu_peak_bytes"] = torch.cuda.max_memory_allocated() - base_gpu
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    result["median_s"] = statistics.median(times) if times else result["first_s"]
    if mode == "compare":
        comparison = last["comparison"]
        result["summary"] = comparison.summary()
        result["devices"] = f"torch {comparison.info.torch_device}, keras {comparison.info.keras_device}"
        result["split_s"] = {k: round(v, 3) for k, v in comparison.info.seconds.items()}
    return result


def _run_worker(args, model_name: str, mode: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        model_name,
        mode,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--device",
        args.device,
        "--repeat",
        str(args.repeat),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"model": model_name, "mode": mode, "error": (done.stderr or done.stdout)[-2000:]}
    return json.loads(lines[-1])


def once(args) -> None:
    """One comparison per model, end to end and with ``isolate=True``, in this process."""
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np
    import torch

    import kerastorch_magic as k2t

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    cuda = args.device.startswith("cuda")
    for name in args.models:
        started = time.perf_counter()
        model = getattr(keras.applications, name)(weights=None, input_shape=(args.size, args.size, 3))
        built = time.perf_counter() - started
        started = time.perf_counter()
        conversion = k2t.convert(model)
        converted = time.perf_counter() - started
        x = np.random.default_rng(0).standard_normal((args.batch, args.size, args.size, 3)).astype("float32")
        count = len(conversion.traces)
        print(f"\n{name}: {count} layer outputs; built {built:.1f} s, converted {converted:.1f} s")
        for isolate in (False, True):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            started = time.perf_counter()
            comparison = k2t.compare(model, conversion, inputs=x, device=args.device, isolate=isolate)
            took = time.perf_counter() - started
            split = {k: round(v, 2) for k, v in comparison.info.seconds.items()}
            gpu = ""
            if cuda:
                gpu = f"; GPU peak above start {(torch.cuda.max_memory_allocated() - base) / 2**20:.0f} MiB"
            print(f"  {'isolated  ' if isolate else 'end to end'} {took:6.2f} s {split}{gpu}")
            if "drift_check" in comparison.info.seconds:  # the drift verdict's cost (issue 13.5: <= 2x)
                check = comparison.info.seconds["drift_check"]
                print(f"    drift check {check:.2f} s: {took / (took - check):.2f}x the comparison alone")
            print(f"    {comparison.summary()}")
        print(f"  devices: torch {comparison.info.torch_device}; Keras {comparison.info.keras_device}")
        widget = comparison.widget()
        print(f"  widget: {len(widget.rows)} rows, {len(widget.detail)} preview bytes shipped")
        del model, conversion, comparison, widget
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def _mib(value) -> str:
    return f"{value / 2**20:8.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["ResNet50", "EfficientNetV2L"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "MODE"))
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--once", action="store_true", help="one comparison per model, in process")
    args = parser.parse_args()
    if args.once:
        once(args)
        return
    if args.worker:
        print(json.dumps(worker(*args.worker, args.size, args.batch, args.device, args.repeat)))
        return

    import keras
    import torch

    print(
        f"compare() vs one forward pass: {args.size}x{args.size}x3, batch {args.batch}, torch on "
        f"{args.device}, Keras {keras.__version__} ({keras.backend.backend()}), torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    results = []
    for name in args.models:
        runs = {mode: _run_worker(args, name, mode) for mode in ("keras", "torch", "compare")}
        results.append(runs)
        failed = [mode for mode, run in runs.items() if "error" in run]
        print(f"\n{name}")
        if failed:
            for mode in failed:
                print(f"  {mode}: FAILED\n    " + runs[mode]["error"].strip().replace("\n", "\n    "))
            continue
        keras_run, torch_run, compare_run = runs["keras"], runs["torch"], runs["compare"]
        print(f"  layers compared: {compare_run['layers']}; {compare_run['summary']}")
        print(f"  devices: {compare_run['devices']}; memory by {compare_run['memory_method']}")
        print("                       first call     median    peak memory above start")
        for label, run in (
            ("Keras forward", keras_run),
            ("PyTorch forward", torch_run),
            ("compare()", compare_run),
        ):
            gpu = f"   GPU {_mib(run['gpu_peak_bytes'])}" if "gpu_peak_bytes" in run else ""
            times = f"{run['first_s']:9.2f} s {run['median_s']:9.2f} s"
            print(f"  {label:<17} {times}  {_mib(run['peak_bytes'])}{gpu}")
        print(f"  (building the PyTorch module, inside compare(): {_mib(torch_run['build_bytes'])})")
        took = compare_run["median_s"]
        both = keras_run["median_s"] + torch_run["median_s"]
        print(
            f"  time ratio   compare / Keras forward: {took / keras_run['median_s']:.1f}x; "
            f"/ (Keras + PyTorch forwards): {took / both:.1f}x; split {compare_run['split_s']}"
        )
        one = max(keras_run["peak_bytes"], torch_run["peak_bytes"], 1)
        own = max(0, compare_run["peak_bytes"] - torch_run["build_bytes"])
        print(
            f"  memory ratio compare / one forward pass (the larger of the two): "
            f"{compare_run['peak_bytes'] / one:.2f}x; without the module build: {own / one:.2f}x"
        )
        if "gpu_peak_bytes" in compare_run:
            ratio = compare_run["gpu_peak_bytes"] / max(torch_run["gpu_peak_bytes"], 1)
            print(f"  GPU memory ratio compare / PyTorch forward: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
