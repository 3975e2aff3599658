"""``keras2torch``: convert a saved Keras model file to a PyTorch module file and its weights.

    keras2torch model.keras -o net.py --weights net.safetensors [--name Net] [--check]

Writes ``net.py`` (the generated class, a ``load_net()`` that loads the weights file written next
to it, and the training setup when the model was saved compiled) and the weights. Both are written
atomically: a failure leaves any previous files as they were. ``--check`` compares the two models
layer by layer on seeded random input, prints a table and the verdict, and makes the exit status
say whether they match, so a port can be checked in CI.

Exit status: 0 done (and matching, with ``--check``: float32 drift alone, where every layer
matches fed Keras's own inputs, is a match and the verdict says so); 1 the model cannot be
converted, or ``--check`` found a conversion error; 2 bad arguments, an input file that cannot be
loaded, or an output path that cannot be written. Progress goes to stderr, unless ``-q``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import files, weights
from .conversion import INPUT_FORMATS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Exit(Exception):
    """Stop with a one-line message and an exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras2torch",
        description="Convert a saved Keras model (.keras, legacy .h5, or .weights.h5 with --build) to an "
        "exact, readable PyTorch nn.Module: a Python file with the class, and its weights.",
        epilog="Exit status: 0 done; 1 conversion error or --check mismatch; 2 bad arguments, "
        "unreadable model file or unwritable output.",
    )
    parser.add_argument("model", help="the saved model: .keras, .h5/.hdf5 or .weights.h5 (with --build)")
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE.py",
        help="the Python file to write (default: the class name in snake case, net.py for Net)",
    )
    parser.add_argument(
        "--weights",
        metavar="PATH",
        help="where to write the weights: .safetensors (default: next to the output, same stem) or "
        ".pt/.pth (torch.save); the output file loads them from there",
    )
    parser.add_argument("--name", default="Net", help="class name of the generated module (default Net)")
    parser.add_argument(
        "--input-format",
        default="channels_first",
        choices=INPUT_FORMATS,
        help="channels_first (default): idiomatic PyTorch layouts (N, C, H, W); channels_last: "
        "exactly Keras's layouts",
    )
    parser.add_argument(
        "--flat",
        action="store_true",
        help="one class holding every layer (default: each structure the model repeats, e.g. a "
        "ResNet bottleneck, is one nn.Module class instantiated in nn.Sequential stages)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare Keras and PyTorch layer by layer on seeded random input; print a table and "
        "the verdict; exit 1 on a conversion error (float32 drift alone passes, and is named)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="relative error allowed by --check (default 1e-4)"
    )
    parser.add_argument(
        "--device", default=None, help="where --check runs PyTorch: cpu, cuda, mps (default: the best one)"
    )
    parser.add_argument(
        "--unsafe",
        action="store_true",
        help="load with safe_mode=False: runs the pickled Python of Lambda layers. Only for files you trust",
    )
    parser.add_argument(
        "--custom-objects",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="custom layer classes/functions: ATTR is a dict of them, or one class/function "
        "(MODULE may be a path to a .py file); repeatable",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (or run FILE.py) first, e.g. the one registering custom layers with "
        "@keras.saving.register_keras_serializable; repeatable",
    )
    parser.add_argument(
        "--build",
        metavar="SCRIPT.py:FUNCTION",
        help="for a .weights.h5 file: the function (no arguments) that builds the model's "
        "architecture; the weights are then loaded into it",
    )
    parser.add_argument(
        "--no-training",
        action="store_true",
        help="leave out the training setup translated from the model's compile() settings",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress messages and no table")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = _Progress(quiet=args.quiet)
    try:
        return _run(args, progress)
    except _Exit as stop:
        print(f"keras2torch: error: {stop}", file=sys.stderr)
        return stop.status


def _run(args, progress: _Progress) -> int:
    from . import naming
    from .codegen import format_source
    from .magic import instance_name
    from .registry import ConversionError

    try:
        class_name = naming.class_identifier(args.name)
    except ValueError as error:
        raise _Exit(f"--name: {error}", EXIT_USAGE) from None
    output = _check_output(args.output or f"{instance_name(class_name)}.py")
    weights_path = _check_weights(args.weights or str(output.with_suffix(".safetensors")))
    model_path = Path(args.model).expanduser()
    size = model_path.stat().st_size if model_path.is_file() else 0
    progress.step(f"loading {model_path}" + (f" ({size / 1e6:.1f} MB)" if size else ""))
    try:
        model = files.load_model(
            model_path,
            unsafe=args.unsafe,
            custom_objects=args.custom_objects,
            imports=args.imports,
            build=args.build,
        )
    except files.FileError as error:
        raise _Exit(str(error), EXIT_USAGE) from None
    progress.step(f"converting Keras model {model.name!r}")
    try:
        from .conversion import convert

        structure = "flat" if args.flat else "blocks"
        conversion = convert(
            model, class_name=class_name, input_format=args.input_format, structure=structure
        )
    except ConversionError as error:
        raise _Exit(str(error), EXIT_FAILED) from None
    code = module_source(conversion, output, weights_path, model_path.name)
    if not args.no_training:
        from . import training

        code = training.add_to(code, model, conversion)
    progress.step(f"writing {weights_path} and {output}")
    try:
        code = format_source(code)  # before writing either file: a failure here leaves both as they were
        weights.write(conversion.state_dict, weights_path)
        weights.atomic_write(output, lambda tmp: Path(tmp).write_text(code, encoding="utf-8"))
    except OSError as error:
        raise _Exit(f"could not write the output: {error}", EXIT_USAGE) from None
    progress.done(f"wrote {output} (class {class_name}) and {weights_path}")
    if not args.check:
        return EXIT_OK
    return _check(model, conversion, args, progress)


# -- outputs ----------------------------------------------------------------------------------------
def _check_output(raw: str) -> Path:
    """The output file, checked before anything is loaded: a bad path costs nothing."""
    path = Path(raw).expanduser()
    if path.suffix != ".py":
        raise _Exit(f"-o {raw!r}: the output is a Python file; give a name ending in .py", EXIT_USAGE)
    if path.is_dir():
        raise _Exit(f"-o {raw!r} is a directory; give a file name inside it", EXIT_USAGE)
    if not path.parent.is_dir():
        raise _Exit(f"-o {raw!r}: the directory {str(path.parent)!r} does not exist", EXIT_USAGE)
    if path.exists() and not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise _Exit(f"-o {raw!r}: not writable (permission denied)", EXIT_USAGE)
    return path


def _check_weights(raw: str) -> Path:
    try:
        return weights.check_writable(raw)
    except weights.WeightsPathError as error:
        raise _Exit(str(error), EXIT_USAGE) from None


def module_source(conversion, output: Path, weights_path: Path, model_file: str) -> str:
    """The generated class plus a ``load_<instance>()`` that reads the weights file beside it.

    The weights are found relative to the module file (``Path(__file__)``), so the pair can be
    moved together and imported from any working directory.
    """
    from . import naming
    from .magic import instance_name
    from .training import merge_imports

    relative = Path(os.path.relpath(weights_path.resolve(), output.resolve().parent)).as_posix()
    if "/" in relative:
        location = f"Path(__file__).parent / {weights._literal(relative)}"
    else:
        location = f"Path(__file__).with_name({weights._literal(relative)})"
    import_line, state = weights.load_expression(weights_path, "weights")
    code = merge_imports(conversion.code.rstrip("\n"), [import_line, "from pathlib import Path"])
    name, instance = conversion.class_name, instance_name(conversion.class_name)
    source = naming.comment_text(model_file, 80)
    return "\n".join(
        [
            code,
            "",
            f"# The Keras weights, written by keras2torch from {source}.",
            f"WEIGHTS = {location}",
            "",
            "",
            f"def load_{instance}(weights=WEIGHTS) -> {name}:",
            f'    """A {name} in eval mode with the Keras weights (``weights``: a state_dict file)."""',
            f"    model = {name}()",
            f"    model.load_state_dict({state})",
            "    return model.eval()",
            "",
        ]
    )


# -- --check --------------------------------------------------------------------------------------
def _check(model, conversion, args, progress: _Progress) -> int:
    from .compare import compare

    progress.step("comparing Keras and PyTorch layer by layer")
    comparison = compare(
        model,
        conversion,
        device=args.device,
        tolerance=args.tolerance,
        progress=not args.quiet,  # "layer k of N" on stderr, as the steps before
    )
    if not args.quiet:
        print_table(comparison)
    # Drift (float32 round-off amplified through depth, every layer exact fed Keras's inputs) is
    # no conversion error: the check passes and says so.
    if not comparison.ok:
        verdict = "MISMATCH"
    elif comparison.drifting:
        verdict = "OK (float32 drift only)"
    else:
        verdict = "OK"
    print(f"keras2torch --check: {verdict}: {comparison.summary()}")
    return EXIT_OK if comparison.ok else EXIT_FAILED


def print_table(comparison, file=None) -> None:
    """The comparison as a terminal table: rich when it is installed, plain text otherwise."""
    file = file or sys.stdout
    frame = comparison.to_dataframe()
    headers = ["#", "Keras layer", "class", "PyTorch", "Keras shape", "rel. error", "status"]
    rows = [
        [
            str(row.index),
            str(row.keras_layer),
            str(row.keras_class),
            str(row.torch_module or "-"),
            str(tuple(row.keras_shape)),
            "-" if row.rel_diff != row.rel_diff else f"{row.rel_diff:.2e}",  # NaN: not compared
            str(row.status),
        ]
        for row in frame.itertuples(index=False)
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for line in [headers, ["-" * w for w in widths], *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip(), file=file)
        return
    table = Table(*headers)
    colours = {"ok": "green", "warn": "yellow", "fail": "red", "drift": "blue", "random": "magenta"}
    for row in rows:
        colour = colours.get(row[-1])
        table.add_row(*row[:-1], f"[{colour}]{row[-1]}[/]" if colour else row[-1])
    Console(file=file, width=max(100, Console(file=file).width)).print(table)


class _Progress:
    """One line per long step on stderr, with the time the previous one took; nothing with -q."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.started = time.perf_counter()

    def step(self, text: str) -> None:
        if not self.quiet:
            print(f"keras2torch: {text}...", file=sys.stderr, flush=True)

    def done(self, text: str) -> None:
        if not self.quiet:
            print(f"keras2torch: {text} ({time.perf_counter() - self.started:.1f} s)", file=sys.stderr)
