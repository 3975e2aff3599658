"""End-to-end time of ``%%keras2torch`` on the guide's Sequential CNN (seed guide, Example 2).

Runs in an in-process IPython shell, after the imports (TensorFlow/Keras, torch, the package and
its comparison): the cell builds the 64x64x3 CNN and the magic converts it, writes the generated
cell (set_next_input) and computes the Keras-vs-PyTorch comparison. Printed: the first run (the
one a notebook user waits for), the median of the following runs (re-running the cell), the same
cell without the magic measured in the same process as the reference, and the split between
converting and comparing. Target: <= 2 s including the comparison.

    .venv/bin/python benchmarks/magic.py [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_S = 2.0
CELL = """
model = keras.Sequential([
    keras.Input((64, 64, 3)),
    keras.layers.Conv2D(32, (3, 3), activation="relu"),
    keras.layers.MaxPooling2D((2, 2)),
    keras.layers.Conv2D(64, (3, 3), activation="relu"),
    keras.layers.MaxPooling2D((2, 2)),
    keras.layers.Flatten(),
    keras.layers.Dense(10, activation="softmax"),
])
"""


def timed(shell, source: str) -> float:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        started = time.perf_counter()
        result = shell.run_cell(source, store_history=True)
        elapsed = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"the cell failed: {result.error_before_exec or result.error_in_exec!r}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="re-runs after the first (default 5)")
    args = parser.parse_args()

    from IPython.core.interactiveshell import InteractiveShell

    started = time.perf_counter()
    import keras  # noqa: F401
    import torch  # noqa: F401

    import kerastorch_magic  # noqa: F401
    from kerastorch_magic import compare, magic  # noqa: F401

    shell = InteractiveShell.instance()
    shell.run_cell("import keras", store_history=False)
    shell.run_cell("%load_ext kerastorch_magic", store_history=False)
    imports = time.perf_counter() - started

    reference = timed(shell, CELL)  # the cell alone, as without the magic
    first = timed(shell, "%%keras2torch --insert payload" + CELL)
    again = [timed(shell, "%%keras2torch --insert payload" + CELL) for _ in range(args.runs)]
    no_compare = [
        timed(shell, "%%keras2torch --insert payload --no-compare" + CELL) for _ in range(args.runs)
    ]
    warm = statistics.median(again)
    convert_only = statistics.median(no_compare)

    print(f"imports (not counted)                      {imports:6.2f} s")
    print(f"cell without the magic (reference)         {reference:6.3f} s")
    print(
        f"%%keras2torch, first run after imports     {first:6.3f} s   "
        f"({first / reference:.1f}x the cell alone)"
    )
    print(f"%%keras2torch, re-run (median of {args.runs})         {warm:6.3f} s   ({warm / reference:.1f}x)")
    print(f"  of which conversion + writing (no compare) {convert_only:6.3f} s")
    print(f"  of which comparison                       {warm - convert_only:6.3f} s")
    verdict = "OK" if max(first, warm) <= TARGET_S else "OVER"
    print(f"target <= {TARGET_S:.1f} s end to end including the comparison: {verdict}")


if __name__ == "__main__":
    main()
