"""Conversion time of traced custom layers against the same architecture built from built-in layers.

Issue 9's target: converting a model whose blocks are custom layers (traced: their ``call()`` runs
again on symbolic tensors) costs at most 2x converting the same blocks written as built-in layers
in a Functional model. Both models are built fresh for every run (tracing happens once per model,
and a user converts a model once), interleaved, and the median of ``--runs`` is compared.

    .venv/bin/python benchmarks/tracing.py [--blocks 8] [--width 32] [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the custom layer the tracing tests check for exactness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    import keras
    from keras import layers
    from test_tracing import Residual  # Dense(relu) -> Dense, plus the input: builtin()'s block

    import kerastorch_magic as k2t

    def builtin():
        inputs = x = keras.Input((args.width,))
        for _ in range(args.blocks):
            hidden = layers.Dense(args.width)(layers.Dense(args.width, activation="relu")(x))
            x = layers.Add()([hidden, x])
        return keras.Model(inputs, x)

    def traced():
        inputs = x = keras.Input((args.width,))
        for _ in range(args.blocks):
            x = Residual(args.width)(x)
        return keras.Model(inputs, x)

    k2t.convert(builtin()), k2t.convert(traced())  # warm-up: imports, ruff's first start
    times: dict[str, list[float]] = {"builtin": [], "traced": []}
    for _ in range(args.runs):
        for name, make in (("builtin", builtin), ("traced", traced)):
            model = make()
            start = time.perf_counter()
            k2t.convert(model)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:8s} median {median * 1000:6.1f} ms over {args.runs} runs ({args.blocks} blocks)")
    ratio = medians["traced"] / medians["builtin"]
    print(f"traced / builtin = {ratio:.2f} (target <= 2.0): {'ok' if ratio <= 2.0 else 'over'}")


if __name__ == "__main__":
    main()
