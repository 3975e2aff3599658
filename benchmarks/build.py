"""``Conversion.build()`` against ``load_state_dict`` alone, same process, same run (issue 11.7).

``build()`` must not spend time initialising weights it then overwrites: the generated class's
``reset_parameters()`` re-creates Keras's initialisers (``trunc_normal_`` and friends), which for
EfficientNetB7 took 10-30 s. The class is now built on the meta device and the weights assigned.
For each model (keras.applications, weights=None, 224x224x3) it prints the median of ``--runs``:

* ``build``: ``conversion.build()`` (exec of the source, construction, weights, eval mode);
* ``init``: constructing the class the ordinary way (what a user's ``Net()`` costs);
* ``load``: ``load_state_dict`` alone into an already-constructed module (the reference).

Target: build / load <= 2.0.

    .venv/bin/python benchmarks/build.py [--models EfficientNetB0 EfficientNetB7] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics

from _common import timings  # quiet TensorFlow, the repository importable


def _median_seconds(function, runs: int) -> float:
    return statistics.median(timings(function, runs))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["ResNet50", "EfficientNetB0", "EfficientNetB7"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import keras

    print(f"{'model':<16} {'build s':>8} {'init s':>8} {'load s':>8} {'build/load':>10}")
    for name in args.models:
        build, init, load = _measure(getattr(keras.applications, name), args.runs)
        print(f"{name:<16} {build:>8.3f} {init:>8.3f} {load:>8.3f} {build / load:>9.2f}x")
        keras.backend.clear_session()


def _measure(application, runs: int) -> tuple[float, float, float]:
    import kerastorch_magic as k2t

    conversion = k2t.convert(application(weights=None, input_shape=(224, 224, 3)))
    namespace: dict = {}
    exec(compile(conversion.code, "<generated>", "exec"), namespace)  # noqa: S102
    cls = namespace[conversion.class_name]
    built = cls()
    build = _median_seconds(conversion.build, runs)
    init = _median_seconds(cls, runs)
    load = _median_seconds(lambda: built.load_state_dict(conversion.state_dict), runs)
    return build, init, load


if __name__ == "__main__":
    main()
