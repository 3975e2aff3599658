"""Real-world check: run the models that public Keras examples build through convert + compare.

    .venv/bin/python scripts/realworld.py REPO_OR_FILE... [--out DIR] [--timeout S] [--only TEXT]
    .venv/bin/python scripts/realworld.py --summarize test-artifacts/realworld/results.jsonl
    .venv/bin/python scripts/realworld.py REPO... --compare-with OLD/results.jsonl   # before/after

Check out the repositories first (this script never downloads anything), e.g.
``git clone --depth 1 https://github.com/keras-team/keras-io``, the same for
``fchollet/deep-learning-with-python-notebooks`` and ``ageron/handson-ml3``,
then pass their paths. What is read from each path:

* a keras-io checkout (it has ``examples/``): every ``examples/<topic>/<name>.py``;
* a directory with ``chapterNN_*.ipynb`` (Deep Learning with Python, 3rd edition): those notebooks;
* a directory with numbered notebooks ``NN_*.ipynb`` (handson-ml3): chapters 10 to 19;
* any other directory: its ``*.py`` and ``*.ipynb``; a file: that file.

Each example runs in its own subprocess (forked from a parent that imported TensorFlow, Keras, torch
and kerastorch_magic once; ``--no-fork`` starts a fresh interpreter instead), one at a time, niced,
with a timeout and a memory cap. It executes the example's top-level statements one by one (parsed
with ``ast``; a notebook's code cells in order, IPython magics dropped) in a scratch directory, and
skips what trains, evaluates, predicts, plots or downloads (``.fit``, ``.predict``, ``plt.*``,
``get_file``, ``load_data``, ``tfds``, ``while`` loops, ``for`` loops over anything but literal
sequences, ``GradientTape`` blocks...). Pretrained weights are never fetched (``weights=None``).
A failed assignment of a data-dependent size (``vocab_size = len(vocab)``) gets a generic value.
Then it calls the example's model-building functions that take no required argument (``create_*``,
``build_*``, ``get_*model*``, ``make_*model*``), builds unbuilt subclassed models when the example
names an input shape, and puts every ``keras.Model`` it saw (also ones a later statement replaced)
through ``convert`` and ``compare`` on randomised weights.

Every model is classified: ``exact`` (``compare(...).ok``), ``mismatch`` (max relative error and
first failing layer), ``refused`` (the ``ConversionError``'s first reason: the layer class or op it
names), ``crashed`` (any other exception in convert/compare/the generated forward: a bug in our
tool, with a traceback summary), ``keras failed`` (Keras itself could not run the model here, so
there is no reference: ``compare``'s ``KerasRunError``) or ``not built``. An example that yields
no model is ``not extractable`` (with its first relevant error). Output under ``--out`` (default
``test-artifacts/realworld/``): ``results.jsonl`` (one record per example and per model),
``summary.md`` / ``summary.json`` (counts per class, per refusal reason, crash list) and ``logs/``
(each example's stdout/stderr).
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import importlib.util
import inspect
import json
import linecache
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "test-artifacts" / "realworld"

ENVIRONMENT = {
    "KERAS_BACKEND": "tensorflow",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    # oneDNN also runs channels_first convolutions on the CPU (models written for JAX or torch),
    # which TensorFlow's own kernels refuse; TensorFlow turns it on by itself only on some CPUs.
    "TF_ENABLE_ONEDNN_OPTS": "1",
    "TF_USE_LEGACY_KERAS": "0",  # tf.keras must be Keras 3 even where tf_keras is installed
    "MPLBACKEND": "Agg",
    "OMP_NUM_THREADS": "1",  # one example at a time on a shared machine: one core each
    "CUDA_VISIBLE_DEVICES": "",
}

# -- what an example may run -----------------------------------------------------------------------
# Method or function names whose call makes a statement skipped: training, inference on data,
# saving, plotting, downloading.
SKIP_CALLS = {
    "fit",
    "fit_generator",
    "evaluate",
    "evaluate_generator",
    "predict",
    "predict_generator",
    "predict_on_batch",
    "train_on_batch",
    "test_on_batch",
    "save",
    "save_weights",
    "load_weights",
    "export",
    "get_file",
    "load_data",
    "urlretrieve",
    "download",
    "show",
    "imshow",
    "savefig",
    "plot_model",
    "gradient",
    "apply_gradients",
    "display",
    "system",
    "input",
}
# Names whose use anywhere in a statement makes it skipped (plotting, dataset hubs, the network).
SKIP_ROOTS = {
    "plt",
    "matplotlib",
    "sns",
    "seaborn",
    "tfds",
    "tensorflow_datasets",
    "kagglehub",
    "gdown",
    "wget",
    "requests",
    "urllib",
    "subprocess",
    "IPython",
    "wandb",
    "GradientTape",
}
# Calls of the example's own helpers that train or plot (keras-io's run_experiment, train_model...).
SKIP_HELPER = re.compile(r"^(run_experiment|train|fit|evaluate|plot|show|display|visuali[sz]e|download)")
# Functions called after the run when nothing called them and they need no argument.
BUILDER = re.compile(r"^(create_|build_)|^(get|make)_\w*model")
# A failed assignment to a size the data would have given: name pattern -> generic value.
# Only names that say they are a size, or assignments that compute an int (len(), .shape[i]...).
SIZE_NAME = re.compile(
    r"^(num|n|max|total)_|_(size|dim|len|length|count)$|^(maxlen|seq_len|vocab_size)$", re.I
)
SIZE_CALLS = {"len", "int", "max", "min", "round", "vocabulary_size", "count", "sum"}
GENERIC_SIZES = [
    (re.compile(r"vocab|tokens|words|max_features|chars", re.I), 1000),
    (re.compile(r"class|label|categor", re.I), 10),
    (re.compile(r"len|steps|seq|time|window|horizon", re.I), 32),
]
GENERIC_SIZE = 16  # any other size (dims, units, features)
# Names an example gives its input shape by (for subclassed models nothing built).
SHAPE_NAMES = re.compile(
    r"^(input_shape|inputs_shape|img_shape|image_shape|input_dim|image_size|img_size)$", re.I
)

STATEMENT_TIMEOUT = 30  # seconds one top-level statement may run
CALIBRATION_ELEMENTS = 2**21  # input floats in the BatchNorm calibration batch
MAX_MODELS = 40  # per example: handson notebooks rebuild `model` dozens of times


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that no ``except Exception`` in the code swallows it."""


@contextlib.contextmanager
def _alarm(seconds: float):
    def fire(signum, frame):
        raise _Timeout(f"over {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- finding examples ------------------------------------------------------------------------------
def discover(paths: list[str]) -> list[tuple[str, Path]]:
    """(example id, file) for every example under ``paths`` (see the module docstring)."""
    found = []
    for given in map(Path, paths):
        if given.is_file():
            found.append((given.name, given))
            continue
        if (given / "examples").is_dir():
            files = sorted(given.glob("examples/*/*.py"))
        elif any(given.glob("chapter*.ipynb")):
            files = sorted(given.glob("chapter*.ipynb"))
        elif any(given.glob("[0-9][0-9]_*.ipynb")):
            files = [f for f in sorted(given.glob("[0-9][0-9]_*.ipynb")) if 10 <= int(f.name[:2]) <= 19]
        else:
            files = sorted(given.glob("*.py")) + sorted(given.glob("*.ipynb"))
        found += [(f"{given.name}/{f.relative_to(given)}", f) for f in files]
    return found


# -- reading an example ----------------------------------------------------------------------------
KEPT_CELL_MAGICS = {"%%time", "%%timeit", "%%capture"}  # they wrap plain Python


def code_cells(path: Path) -> list[str]:
    """The example's Python, cell by cell (a ``.py`` file is one cell), IPython magics removed."""
    if path.suffix != ".ipynb":
        return [path.read_text(encoding="utf-8")]
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        lines = source.splitlines()
        if lines and lines[0].startswith("%%"):
            if lines[0].split()[0] not in KEPT_CELL_MAGICS:
                continue  # %%bash, %%writefile...: not Python
            lines = ["pass"] + lines[1:]  # keep line numbers
        cells.append("\n".join(_neutral(line) for line in lines))
    return cells


def _neutral(line: str) -> str:
    """``%pip install x`` / ``!wget ...`` / ``files = !ls`` -> ``pass`` at the same indentation."""
    stripped = line.lstrip()
    if stripped.startswith(("%", "!")) or re.match(r"^[\w, ]+=\s*[!%]", stripped):
        return line[: len(line) - len(stripped)] + "pass"
    return line


def parse(path: Path) -> tuple[str, list[ast.stmt], list[str]]:
    """(the source as one text, its top-level statements, syntax errors of cells left out)."""
    text, statements, problems, line = "", [], [], 0
    for index, cell in enumerate(code_cells(path)):
        try:
            tree = ast.parse(cell)
        except SyntaxError as error:
            problems.append(f"cell {index}: SyntaxError: {error.msg} (line {error.lineno})")
        else:
            ast.increment_lineno(tree, line)
            statements += tree.body
        text += cell + "\n\n"
        line += cell.count("\n") + 2
    return text, statements, problems


class _NoPretrainedWeights(ast.NodeTransformer):
    """``weights="imagenet"`` -> ``weights=None``, also where keras.applications defaults to it."""

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        weights = [k for k in node.keywords if k.arg == "weights"]
        for keyword in weights:
            if isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, str):
                keyword.value = ast.copy_location(ast.Constant(None), keyword.value)
        dotted = _dotted(node.func).split(".")  # keras.applications.ResNet50(...), not preprocess_input
        if not weights and "applications" in dotted and dotted[-1][:1].isupper():
            node.keywords.append(ast.keyword(arg="weights", value=ast.Constant(None)))
        return node


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _called_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


STATIC_WRAPPERS = {"range", "enumerate", "zip", "reversed", "sorted", "list", "tuple", "len"}


def skip_reason(statement: ast.stmt, namespace: dict) -> str | None:
    """Why a top-level statement must not run (None: run it)."""
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return None  # a definition runs nothing (a train_step that calls fit stays uncalled)
    for node in ast.walk(statement):
        if isinstance(node, ast.Call):
            name = _called_name(node)
            if name in SKIP_CALLS:
                return f"calls {name}()"
            if SKIP_HELPER.match(name) and callable(namespace.get(name)):
                return f"calls the example's {name}()"
        if isinstance(node, ast.Name) and node.id in SKIP_ROOTS:
            return f"uses {node.id}"
        if isinstance(node, ast.Attribute) and node.attr in SKIP_ROOTS:
            return f"uses {node.attr}"
    if isinstance(statement, ast.While | ast.AsyncFor | ast.AsyncWith):
        return "a while loop"
    if isinstance(statement, ast.For) and not _static(statement.iter, namespace):
        return "a loop over data"
    return None


def _static(node: ast.expr, namespace: dict) -> bool:
    """Whether a loop's iterable is a literal or an in-memory sequence (not a dataset)."""
    if isinstance(node, ast.List | ast.Tuple | ast.Set | ast.Dict | ast.Constant):
        return True
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        return name in STATIC_WRAPPERS and all(_static(arg, namespace) for arg in node.args)
    if isinstance(node, ast.Call) or any(isinstance(n, ast.Call | ast.Lambda) for n in ast.walk(node)):
        return False
    try:  # names, attributes, subscripts: look at the value itself
        value = eval(compile(ast.Expression(node), "<iter>", "eval"), namespace)  # noqa: S307
    except Exception:  # noqa: BLE001 - the loop will fail the same way when it runs
        return True
    return isinstance(value, list | tuple | range | dict | str | int | type({}.items()))


def generic_size(statement: ast.stmt) -> tuple[str, int] | None:
    """(name, generic value) for a failed ``name = <data-dependent size>``."""
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target = statement.targets[0]
    elif isinstance(statement, ast.AnnAssign):
        target = statement.target
    else:
        return None
    if not isinstance(target, ast.Name) or "shape" in target.id.lower() or statement.value is None:
        return None
    value = statement.value
    computes_int = (isinstance(value, ast.Call) and _called_name(value) in SIZE_CALLS) or (
        isinstance(value, ast.Subscript)
        and isinstance(value.value, ast.Attribute)
        and value.value.attr == "shape"
    )
    if not (computes_int or SIZE_NAME.search(target.id)):
        return None
    return target.id, next(
        (size for pattern, size in GENERIC_SIZES if pattern.search(target.id)), GENERIC_SIZE
    )


# -- running an example ----------------------------------------------------------------------------
@dataclass
class Found:
    model: object
    variable: str
    line: int


class Extraction:
    """Runs one example's statements in a fresh module namespace and keeps every model it sees."""

    def __init__(self, path: Path, module_name: str = "realworld_example"):
        import keras

        self.keras = keras
        self.path = path
        self.filename = str(path) if path.suffix == ".py" else f"{path}#code-cells.py"
        self.module = types.ModuleType(module_name)
        self.module.__file__ = self.filename
        sys.modules[module_name] = self.module  # inspect.getsource of the example's classes
        self.namespace = self.module.__dict__
        self.found: list[Found] = []
        self.seen: set[int] = set()
        self.counts = collections.Counter()
        self.skipped: list[str] = []
        self.errors: list[dict] = []
        self.substituted: dict[str, int] = {}
        self.called: set[str] = set()

    def run(self, statement_timeout: float = STATEMENT_TIMEOUT) -> None:
        text, statements, problems = parse(self.path)
        self.errors += [{"line": 0, "error": p, "statement": ""} for p in problems]
        if self.path.suffix != ".py":  # the notebook's joined cells, for inspect.getsource
            linecache.cache[self.filename] = (len(text), None, text.splitlines(True), self.filename)
        for statement in statements:
            self.run_statement(statement, statement_timeout)

    def run_statement(self, statement: ast.stmt, timeout: float) -> None:
        print(f"[realworld] line {statement.lineno}: {_first_line(ast.unparse(statement))[:100]}", flush=True)
        why = skip_reason(statement, self.namespace)
        if why:
            self.counts["skipped"] += 1
            self.skipped.append(f"line {statement.lineno}: {why}")
            return
        statement = ast.fix_missing_locations(_NoPretrainedWeights().visit(statement))
        try:
            code = compile(ast.Module([statement], []), self.filename, "exec")
            with _alarm(timeout):
                exec(code, self.namespace)  # noqa: S102 - the point of the script
        except (Exception, _Timeout) as error:  # noqa: BLE001 - an example's failure is data
            self.counts["failed"] += 1
            self.errors.append(
                {
                    "line": statement.lineno,
                    "error": f"{type(error).__name__}: {_first_line(error)}",
                    "statement": _first_line(ast.unparse(statement)),
                    "builds": _builds_model(statement),
                }
            )
            substitute = generic_size(statement)
            if substitute:
                self.namespace[substitute[0]] = substitute[1]
                self.substituted[substitute[0]] = substitute[1]
        else:
            self.counts["ran"] += 1
            self.called |= {_called_name(n) for n in ast.walk(statement) if isinstance(n, ast.Call)}
            substitute = generic_size(statement)
            if (
                substitute
                and type(self.namespace.get(substitute[0])) is int
                and self.namespace[substitute[0]] == 0
            ):
                # a len() of data never loaded
                self.namespace[substitute[0]] = substitute[1]
                self.substituted[substitute[0]] = substitute[1]
        self.collect(statement.lineno)

    def collect(self, line: int) -> None:
        """Keep every model now in the namespace (one level into lists, tuples and dicts)."""
        for name, value in list(self.namespace.items()):
            if name.startswith("__"):
                continue
            self.keep(value, name, line)
            if isinstance(value, list | tuple):
                for index, item in enumerate(value[:20]):
                    self.keep(item, f"{name}[{index}]", line)
            elif isinstance(value, dict):
                for key, item in list(value.items())[:20]:
                    self.keep(item, f"{name}[{key!r}]", line)

    def keep(self, value, name: str, line: int) -> None:
        if isinstance(value, self.keras.Model) and id(value) not in self.seen:
            self.seen.add(id(value))
            self.found.append(Found(value, name, line))

    def collect_submodels(self) -> None:
        """Models a subclassed model holds (a GAN's generator, a VAE's encoder): what one would port."""
        for found in list(self.found):
            if isinstance(found.model, self.keras.Sequential) or type(found.model).__name__ == "Functional":
                continue
            for name, value in list(vars(found.model).items()):
                if not name.startswith("_"):
                    self.keep(value, f"{found.variable}.{name}", found.line)

    def call_builders(self, timeout: float = STATEMENT_TIMEOUT) -> None:
        """Call ``create_*``/``build_*``/``get_*model*`` functions nothing called that need no argument."""
        for name, value in list(self.namespace.items()):
            if not (inspect.isfunction(value) and value.__module__ == self.module.__name__):
                continue
            if not BUILDER.match(name) or name in self.called or _required_arguments(value):
                continue
            try:
                with _alarm(timeout):
                    result = value()
            except (Exception, _Timeout) as error:  # noqa: BLE001
                self.errors.append(
                    {
                        "line": 0,
                        "error": f"{name}(): {type(error).__name__}: {_first_line(error)}",
                        "statement": f"{name}()",
                        "builds": True,
                    }
                )
                continue
            for index, item in enumerate(result if isinstance(result, list | tuple) else [result]):
                self.keep(item, f"{name}()" + (f"[{index}]" if isinstance(result, list | tuple) else ""), 0)

    def build_unbuilt(self) -> None:
        """Call unbuilt models on zeros of a shape the example names (``input_shape = (28, 28, 1)``)."""
        import numpy as np

        shapes = []
        for name, value in self.namespace.items():
            if not SHAPE_NAMES.match(name):
                continue
            if isinstance(value, int):
                shapes += [(value, value, 3)] if "size" in name.lower() else [(value,)]
            elif isinstance(value, tuple | list) and value and all(isinstance(v, int) for v in value):
                shapes += (
                    [tuple(value) + (3,)] if "size" in name.lower() and len(value) == 2 else [tuple(value)]
                )
        for found in self.found:
            for shape in shapes if not found.model.built else []:
                try:
                    with _alarm(STATEMENT_TIMEOUT):
                        found.model(np.zeros((2, *shape), "float32"))
                    break
                except (Exception, _Timeout):  # noqa: BLE001 - try the next shape
                    continue

    def not_extractable_reason(self) -> str:
        """The first error of a statement that builds a model, else the first error, else why not."""
        errors = [e for e in self.errors if e.get("builds")] or self.errors
        if errors:
            return f"line {errors[0]['line']}: {errors[0]['error']}"
        return "no keras.Model built by the statements that ran"


MODEL_WORDS = re.compile(
    r"model|net|encoder|decoder|generator|discriminator|classifier|gan|vae|transformer", re.I
)


def _builds_model(statement: ast.stmt) -> bool:
    """Whether a statement looks like it builds a model (to tell its error from data errors)."""
    names = {n.id for n in ast.walk(statement) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(statement) if isinstance(n, ast.Attribute)}
    if names & {"Model", "Sequential", "Input", "models"}:
        return True
    calls = [_called_name(n) for n in ast.walk(statement) if isinstance(n, ast.Call)]
    return any(BUILDER.match(c) or (c[:1].isupper() and MODEL_WORDS.search(c)) for c in calls)


def _required_arguments(function) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in parameters
    )


def _first_line(value) -> str:
    text = str(value).strip()
    return (text.splitlines() or [""])[0][:300]


def _traceback_tail(error: BaseException, frames: int = 3) -> list[str]:
    """The last frames (file:line function) and the exception line."""
    stack = traceback.extract_tb(error.__traceback__)[-frames:]
    lines = [f"{Path(f.filename).name}:{f.lineno} {f.name}: {(f.line or '').strip()[:160]}" for f in stack]
    return lines + [f"{type(error).__name__}: {_first_line(error)}"]


# -- checking one model ----------------------------------------------------------------------------
def refusal_reason(error) -> str:
    """The ConversionError's first reason: ``Class: why`` for the first layer/op it names."""
    message = str(error)
    wrapped = re.match(r"cannot convert Keras model '[^']*': (\w+): ", message)
    if wrapped and error.__cause__ is not None and wrapped.group(1) == type(error.__cause__).__name__:
        # convert() turns any exception into a ConversionError: an internal error, likely a bug
        return f"internal {wrapped.group(1)} (wrapped): {_normalise(_first_line(error.__cause__))}"
    if error.layers:
        name, class_name = error.layers[0]
        marker = f"{name!r} ({class_name}):"
        lines = [line.strip() for line in message.splitlines() if marker in line]
        detail = next((line for line in lines if line.startswith("-")), lines[0] if lines else "")
        why = detail.split(marker, 1)[1] if marker in detail else _first_line(message)
        return f"{class_name}: {_normalise(why)}"
    return _normalise(re.sub(r"^cannot convert Keras model '[^']*': ", "", _first_line(message)))


def _normalise(text: str) -> str:
    """Group equal reasons: no layer names, numbers, quoted source or long parentheses."""
    text = re.sub(r"\s*\((kerastorch_magic\.converter|load the file)[^)]*\)", "", text)
    text = _drop_long_parentheses(text)
    text = re.sub(r"\s+at [\w.-]+:\d+.*$", "", text)  # "... at vae.py:33: `source`"
    text = re.sub(r"`[^`]*`|'[^']*'", "'…'", text)
    text = re.sub(r"\d+", "N", text)
    return text.strip()[:140]


def _drop_long_parentheses(text: str, longest: int = 40) -> str:
    """Remove parenthesised asides over ``longest`` characters (quoted exception texts), nested too."""
    out, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            if depth == 0:
                start = index
            depth += 1
        elif char == ")" and depth:
            depth -= 1
            if depth == 0:
                aside = text[start : index + 1]
                out.append(aside if len(aside) <= longest else "")
            continue
        if depth == 0:
            out.append(char)
    if depth:  # unbalanced (cut off): keep what was open if short
        out.append(text[start:] if len(text) - start <= longest else "")
    return re.sub(r"\s+([;,.:])", r"\1", "".join(out)).strip()


def check_model(found: Found, tolerance: float, timeout: float, randomise: bool) -> dict:
    import kerastorch_magic as k2t

    model = found.model
    record = {
        "type": "model",
        "model": getattr(model, "name", "?"),
        "variable": found.variable,
        "line": found.line,
        "class": type(model).__name__,
    }
    if not model.built:
        return record | {"result": "not built", "reason": f"{type(model).__name__} never called or built"}
    started = time.perf_counter()
    stage = "randomise"
    try:
        with _alarm(timeout):
            if randomise:
                _randomise(model)
            stage = "convert"
            conversion = k2t.convert(model)
            stage = "compare"
            comparison = k2t.compare(model, conversion, tolerance=tolerance, progress=False)
    except _Timeout:
        return record | {
            "result": "timeout",
            "stage": stage,
            "seconds": round(time.perf_counter() - started, 1),
        }
    except k2t.ConversionError as error:
        result = {
            "result": "refused",
            "reason": refusal_reason(error),
            "message": str(error)[:2000],
            "layers": [list(layer) for layer in error.layers[:20]],
        }
        if error.__cause__ is not None:
            result["cause"] = _traceback_tail(error.__cause__, 4)
        return record | result | {"seconds": round(time.perf_counter() - started, 1)}
    except k2t.KerasRunError as error:  # Keras could not run its own model here: no reference
        return record | {
            "result": "keras failed",
            "stage": stage,
            "reason": _first_line(error),
            "seconds": round(time.perf_counter() - started, 1),
        }
    except Exception as error:  # noqa: BLE001 - a crash of our tool is what we report
        return record | {
            "result": "crashed",
            "stage": stage,
            "reason": f"{type(error).__name__}: {_first_line(error)}",
            "traceback": _traceback_tail(error, 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["max_rel_diff"] = _number(comparison.max_rel_diff)
    if comparison.error:
        return record | {"result": "crashed", "stage": "forward", "reason": _first_line(comparison.error)}
    if comparison.ok:
        return record | {"result": "exact"}
    failure = comparison.first_failure
    return record | {
        "result": "mismatch",
        "reason": f"{failure.keras_class} ({failure.converter or 'no converter'})"
        if failure
        else "nothing compared",
        "first_failure": failure.keras_layer if failure else None,
        "first_failure_rel_diff": _number(failure.rel_diff) if failure else None,
    }


def _number(value) -> float | None:
    value = float(value)
    return None if value != value else value  # NaN is not JSON


def _randomise(model) -> None:
    """Random weights (the tests' own randomisation), so that no error hides in zero biases.

    BatchNorm statistics come from the tests' calibration pass, on a batch sized to the input (the
    tests' 32 samples of a 3-D volume would need tens of GB); random statistics where the model's
    random inputs cannot run (open dimensions, dict inputs).
    """
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import exactness
    finally:
        sys.path.remove(str(ROOT / "tests"))
    exactness.randomise_weights(model, calibrate=False)
    try:
        per_sample = sum(int(np.prod(tensor.shape[1:])) for tensor in model.inputs)
        batch = int(np.clip(CALIBRATION_ELEMENTS // max(per_sample, 1), 2, 32))
        exactness._calibrate_batch_norm(model, exactness.random_inputs(model, batch))
    except Exception:  # noqa: BLE001 - keep the random statistics
        pass


def run_example(path: Path, args) -> list[dict]:
    """Extract the example's models and check each; returns the records (the example's last)."""
    started = time.perf_counter()
    extraction = Extraction(path)
    extraction.run()
    extraction.call_builders()
    extraction.collect_submodels()
    extraction.build_unbuilt()
    records = []
    for found in extraction.found[:MAX_MODELS]:
        if time.perf_counter() - started > args.timeout - 10:
            records.append(
                {
                    "type": "model",
                    "model": found.model.name,
                    "variable": found.variable,
                    "result": "timeout",
                    "stage": "example time budget",
                }
            )
            continue
        print(f"[realworld] checking {found.variable} ({found.model.name})", flush=True)
        records.append(check_model(found, args.tolerance, args.model_timeout, not args.no_randomise))
        _write(args.result, records[-1])  # kept even if a later model stalls the example
    example = {
        "type": "example",
        "status": "ok" if extraction.found else "not extractable",
        "models": len(extraction.found),
        "models_checked": min(len(extraction.found), MAX_MODELS),
        "statements": dict(extraction.counts),
        "substituted": extraction.substituted,
        "errors": extraction.errors[:12],
        "skipped": extraction.skipped[:12],
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not extraction.found:
        example["reason"] = extraction.not_extractable_reason()
    _write(args.result, example)
    return records + [example]


def _write(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(record, default=str) + "\n")


# -- the parent: one subprocess per example --------------------------------------------------------
def _warm_up() -> None:
    """Import the heavy modules once, before forking (each child then starts in milliseconds)."""
    import keras  # noqa: F401
    import matplotlib  # noqa: F401
    import numpy  # noqa: F401
    import tensorflow  # noqa: F401
    import torch  # noqa: F401

    import kerastorch_magic  # noqa: F401
    import kerastorch_magic.converters  # noqa: F401


def _child(path: Path, args, log: Path, workdir: Path) -> None:
    """In the forked child: quiet, single-threaded, in a scratch directory; never returns."""
    code = 0
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        # Python-level streams too (they may not write to fd 1/2, e.g. under pytest's capture)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(workdir)
        _single_threaded()
        run_example(path, args)
    except BaseException:  # noqa: BLE001 - the parent reads what was written, and the log
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _single_threaded() -> None:
    import tensorflow as tf
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def _wait(pid: int, timeout: float, max_rss_gb: float) -> str:
    """Wait for a child; kill it past the timeout or the memory cap. Returns how it ended."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return (
                "ok"
                if os.waitstatus_to_exitcode(status) == 0
                else f"exit {os.waitstatus_to_exitcode(status)}"
            )
        ended = "timeout" if time.monotonic() > deadline else "memory" if _rss_gb(pid) > max_rss_gb else None
        if ended:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return ended
        time.sleep(0.2)


def _start(path: Path, args, result: Path, log: Path, workdir: Path) -> int:
    if args.no_fork:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            str(path),
            "--result",
            str(result),
            "--timeout",
            str(args.timeout),
            "--model-timeout",
            str(args.model_timeout),
            "--tolerance",
            str(args.tolerance),
        ] + (["--no-randomise"] if args.no_randomise else [])
        with open(log, "w") as out:
            return subprocess.Popen(command, stdout=out, stderr=out, cwd=workdir, start_new_session=True).pid
    pid = os.fork()
    if pid == 0:
        os.setsid()  # its own process group: a kill takes whatever it started too
        args.result = str(result)
        _child(path, args, log, workdir)
    return pid


def _last_step(log: Path) -> str:
    """The child's last progress line (what it was doing when killed)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("[realworld]")]
    return lines[-1].removeprefix("[realworld] ") if lines else "start-up"


def run_all(examples: list[tuple[str, Path]], args) -> list[dict]:
    out = Path(args.out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    results_path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        os.nice(args.nice)
    if not args.no_fork:
        _warm_up()
    package = importlib.util.find_spec("kerastorch_magic").origin
    records = [{"type": "run", "package": package, "examples": len(examples), "started": time.ctime()}]
    results_path.write_text(json.dumps(records[0]) + "\n")
    scratch = Path(tempfile.mkdtemp(prefix="realworld-"))
    try:
        for number, (name, path) in enumerate(examples, 1):
            workdir = scratch / str(number)
            workdir.mkdir()
            result, log = scratch / f"{number}.jsonl", out / "logs" / (re.sub(r"[^\w.-]", "_", name) + ".log")
            started = time.monotonic()
            ended = _wait(_start(path, args, result, log, workdir), args.timeout, args.max_rss_gb)
            lines = result.read_text().splitlines() if result.exists() else []
            got = [json.loads(line) for line in lines]
            if not any(r["type"] == "example" for r in got):
                got.append(
                    {
                        "type": "example",
                        "status": ended if ended != "ok" else "crashed",
                        "models": sum(r["type"] == "model" for r in got),
                        "reason": f"the subprocess ended: {ended}, at {_last_step(log)}",
                    }
                )
            for record in got:
                record.update(example=name, path=str(path))
            records += got
            with open(results_path, "a", encoding="utf-8") as file:
                file.writelines(json.dumps(r, default=str) + "\n" for r in got)
            shutil.rmtree(workdir, ignore_errors=True)
            tally = collections.Counter(r["result"] for r in got if r["type"] == "model")
            status = got[-1]["status"]
            took = time.monotonic() - started
            print(f"[{number}/{len(examples)}] {name}: {status}, {dict(tally)} ({took:.0f} s)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return records


# -- the summary -----------------------------------------------------------------------------------
RESULTS = ["exact", "mismatch", "refused", "crashed", "keras failed", "not built", "timeout"]


def summarise(records: list[dict]) -> dict:
    examples = [r for r in records if r["type"] == "example"]
    models = [r for r in records if r["type"] == "model"]
    by_result = collections.Counter(r["result"] for r in models)
    refused = [_normalise(r["reason"]) for r in models if r["result"] == "refused"]  # older runs' too
    blocking = collections.Counter()
    for record in models:
        for cls in {layer[1] for layer in record.get("layers", [])}:
            blocking[cls] += 1
    per_source = collections.defaultdict(collections.Counter)
    for record in models:
        per_source[record["example"].split("/")[0]][record["result"]] += 1
    run = next((r for r in records if r["type"] == "run"), {})
    return {
        "package": run.get("package"),
        "examples": len(examples),
        "examples_with_models": sum(r["status"] == "ok" for r in examples),
        "example_status": dict(collections.Counter(r["status"] for r in examples)),
        "models": len(models),
        "results": {name: by_result.get(name, 0) for name in RESULTS},
        "per_source": {source: dict(counts) for source, counts in sorted(per_source.items())},
        "refusal_reasons": collections.Counter(refused).most_common(),
        "refusal_kinds": collections.Counter(_kind(reason) for reason in refused).most_common(),
        "blocking_classes": blocking.most_common(),
        "mismatches": [
            _brief(r, "first_failure", "max_rel_diff", "reason") for r in models if r["result"] == "mismatch"
        ],
        "crashes": [_brief(r, "stage", "reason", "traceback") for r in models if r["result"] == "crashed"],
        "keras_failures": [_brief(r, "reason") for r in models if r["result"] == "keras failed"],
        "not_extractable": collections.Counter(
            _reason_kind(r.get("reason", "")) for r in examples if r["status"] != "ok"
        ).most_common(),
        "not_extractable_examples": [
            (r["example"], r["status"], r.get("reason", "")) for r in examples if r["status"] != "ok"
        ],
        "examples_with_substituted_sizes": sum(bool(r.get("substituted")) for r in examples),
    }


def _kind(reason: str) -> str:
    """A refusal reason without its layer class (internal errors keep their label)."""
    return reason if reason.startswith("internal ") else reason.split(": ", 1)[-1]


def _brief(record: dict, *keys: str) -> dict:
    return {"example": record["example"], "model": record.get("model"), **{k: record.get(k) for k in keys}}


def _reason_kind(reason: str) -> str:
    """Group not-extractable reasons by exception type (and module, for a missing one)."""
    missing = re.search(r"No module named '([^'.]+)", reason)
    if missing:
        return f"missing module {missing.group(1)}"
    kind = re.search(r"(\w+(Error|Exception|Timeout)):", reason)
    return kind.group(1) if kind else reason[:80]


def render(summary: dict, top: int = 15) -> str:
    results = summary["results"]
    lines = [
        "# Real-world check",
        "",
        f"kerastorch_magic: {summary['package']}",
        "",
        f"Examples: {summary['examples']} ({summary['examples_with_models']} yielded models; "
        f"status {summary['example_status']}; "
        f"{summary['examples_with_substituted_sizes']} with generic sizes)",
        f"Models found: {summary['models']}",
        "",
        "| result | models |",
        "| --- | ---: |",
        *(f"| {name} | {results[name]} |" for name in RESULTS),
        "",
        "## Per source",
        "",
        "| source | " + " | ".join(RESULTS) + " |",
        "| --- |" + " ---: |" * len(RESULTS),
        *(
            f"| {s} | " + " | ".join(str(c.get(n, 0)) for n in RESULTS) + " |"
            for s, c in summary["per_source"].items()
        ),
        "",
        f"## Top {top} refusal reasons (first reason of each refused model)",
        "",
        "| models | reason |",
        "| ---: | --- |",
        *(f"| {count} | {reason} |" for reason, count in summary["refusal_reasons"][:top]),
        "",
        f"## Top {top} refusal kinds (the reasons above without the class)",
        "",
        "| models | kind |",
        "| ---: | --- |",
        *(f"| {count} | {kind} |" for kind, count in summary["refusal_kinds"][:top]),
        "",
        f"## Layer classes blocking the most models (any reason, top {top})",
        "",
        *(f"- {cls}: {count}" for cls, count in summary["blocking_classes"][:top]),
        "",
        f"## Crashed ({len(summary['crashes'])}): bugs in convert/compare/the generated code",
        "",
    ]
    for crash in summary["crashes"]:
        lines.append(f"- {crash['example']} model {crash['model']!r}, {crash['stage']}: {crash['reason']}")
        lines += [f"    - {frame}" for frame in (crash.get("traceback") or [])[:-1]]
    failures = summary["keras_failures"]
    lines += ["", f"## Keras failed ({len(failures)}): Keras could not run the model here", ""]
    lines += [f"- {f['example']} model {f['model']!r}: {f['reason']}" for f in failures]
    lines += ["", f"## Mismatches ({len(summary['mismatches'])})", ""]
    lines += [
        f"- {m['example']} model {m['model']!r}: first failure {m['first_failure']} ({m['reason']}), "
        f"max rel. error {m['max_rel_diff']}"
        for m in summary["mismatches"]
    ]
    lines += ["", "## Not extractable, by kind", ""]
    lines += [f"- {kind}: {count}" for kind, count in summary["not_extractable"]]
    lines += ["", "<details><summary>Every example without a model</summary>", ""]
    lines += [
        f"- {name} ({status}): {reason}" for name, status, reason in summary["not_extractable_examples"]
    ]
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def changes(before: list[dict], after: list[dict]) -> str:
    """Markdown: how each model's result moved between two runs (matched by example, variable, name, line)."""

    def keyed(records):
        return {
            (r["example"], r.get("variable"), r.get("model"), r.get("line")): r
            for r in records
            if r["type"] == "model"
        }

    old, new = keyed(before), keyed(after)
    moves = collections.Counter((old[k]["result"], new[k]["result"]) for k in old.keys() & new.keys())
    lines = ["## Changes since the previous run", "", "| before | after | models |", "| --- | --- | ---: |"]
    lines += [f"| {a} | {b} | {n} |" for (a, b), n in sorted(moves.items(), key=lambda m: -m[1]) if a != b]
    lines += [f"| (same) | | {sum(n for (a, b), n in moves.items() if a == b)} |", ""]
    lines.append(
        f"Models only before: {len(old.keys() - new.keys())}; only now: {len(new.keys() - old.keys())}."
    )
    worse = [
        k for k in old.keys() & new.keys() if old[k]["result"] == "exact" and new[k]["result"] != "exact"
    ]
    lines += ["", f"### Regressions: exact before, not now ({len(worse)})", ""]
    lines += [
        f"- {k[0]} `{k[1]}` ({k[2]}): {new[k]['result']}: {new[k].get('reason', '')}" for k in sorted(worse)
    ]
    return "\n".join(lines) + "\n"


def write_summary(records: list[dict], out: Path, previous: list[dict] | None = None) -> str:
    summary = summarise(records)
    text = render(summary) + ("\n" + changes(previous, records) if previous is not None else "")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    (out / "summary.md").write_text(text)
    return text


def _read(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", help="checked-out repositories, directories or example files")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output directory (default: %(default)s)")
    parser.add_argument("--only", action="append", default=[], help="only examples whose id contains this")
    parser.add_argument("--limit", type=int, default=0, help="at most this many examples")
    parser.add_argument(
        "--timeout", type=float, default=180, help="seconds per example (default: %(default)s)"
    )
    parser.add_argument("--model-timeout", type=float, default=90, help="seconds per model's convert+compare")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="compare()'s relative tolerance")
    parser.add_argument("--max-rss-gb", type=float, default=6.0, help="kill an example past this memory")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the run (default: %(default)s)")
    parser.add_argument("--no-fork", action="store_true", help="a fresh interpreter per example (slower)")
    parser.add_argument("--no-randomise", action="store_true", help="keep the models' initial weights")
    parser.add_argument("--summarize", metavar="RESULTS_JSONL", help="only re-render the summary of a run")
    parser.add_argument(
        "--compare-with",
        metavar="RESULTS_JSONL",
        help="a previous run's results: the summary adds what changed",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # --no-fork's subprocess: one example
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.update(ENVIRONMENT)  # before anything imports TensorFlow or torch

    if args.worker:
        _single_threaded()
        run_example(Path(args.worker), args)
        return 0
    previous = _read(args.compare_with) if args.compare_with else None
    if args.summarize:
        print(write_summary(_read(args.summarize), Path(args.summarize).parent, previous))
        return 0
    if not args.paths:
        parser.error("give the paths of checked-out repositories (see above)")
    examples = [(n, p) for n, p in discover(args.paths) if not args.only or any(o in n for o in args.only)]
    examples = examples[: args.limit] if args.limit else examples
    print(f"{len(examples)} examples -> {args.out}", flush=True)
    records = run_all(examples, args)
    print(write_summary(records, Path(args.out), previous))
    return 0


if __name__ == "__main__":
    sys.exit(main())
