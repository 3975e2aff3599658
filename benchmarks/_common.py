"""What the benchmark scripts share: a quiet TensorFlow, the repository importable, interleaved timing.

Import it first (``from _common import interleaved``; a script's own folder is on ``sys.path``):
TensorFlow reads its log level when it is first imported.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timings(function, repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``function``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def interleaved(functions: dict, runs: int, warmup: int = 2) -> dict:
    """Median seconds of each function, timed in rounds that run every function once.

    A busy machine then slows every variant alike, not whichever happened to run during the spike.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    times: dict = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}
