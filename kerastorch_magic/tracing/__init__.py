"""Tracing what has no converter: custom layers, subclassed models and ``Lambda`` layers.

A Keras layer called on symbolic tensors inside a Functional model records one node and hides its
``call()``. Here the ``call()`` runs again, directly, on fresh symbolic inputs (``KerasTensor``s):
every ``keras.ops`` call and inner layer call it makes then records its own node, and the
outputs' ``_keras_history`` leads back to the fresh inputs, so :mod:`graph` reads the result like
a Functional model.

Three things would otherwise escape the graph, and the trace keeps them symbolic:

* the layer's own weights (``self.kernel = self.add_weight(...)``): while tracing, each attribute
  holding a Variable holds a :class:`VariableRead` node's tensor instead, so ``self.kernel * x``
  and ``ops.exp(self.log_scale)`` are graph nodes and the weight stays a trainable parameter;
* values computed eagerly from shapes (``ops.arange(seq_len)``): an inner layer called on them
  (a positional ``Embedding``) would run eagerly and bake its trainable table into a constant, so
  such arguments become :class:`Constant` nodes and the inner layer call is recorded;
* errors: Python control flow on tensor values, raw TensorFlow calls on symbolic tensors... are
  caught and refused by :func:`trace` with the user's ``file:line``.

Modules: :mod:`.pseudo` (the trace's own entry points), :mod:`.scope` (what changes while a call()
is traced), :mod:`.sizes` (sizes unknown while tracing: ``ops.arange(ops.shape(x)[1])``),
:mod:`.tf_twins` (tf.* calls run as keras.ops), :mod:`.init_recovery` (the initialisers of traced
weights); this one decides what is traced and runs the trace.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import re
from dataclasses import dataclass, field

from ..masks import traced_input_masks
from ..registry import ConversionError
from .init_recovery import initializer_of, recover_initializers
from .pseudo import (
    constant,
    is_constant,
    is_random,
    is_random_draw,
    is_variable_read,
    random_draw,
    variable_read,
)
from .scope import active, layer_calls_patched, random_patched, reshape_patched, weights_symbolic
from .sizes import UNSUPPORTED_SIZE_USE, UnknownSizeError, check_recorded, sizes_patched
from .tf_twins import tensorflow_twins

__all__ = [
    "Trace",
    "class_name_of",
    "constant",
    "initializer_of",
    "is_builtin",
    "is_constant",
    "is_functional",
    "is_random",
    "is_random_draw",
    "is_variable_read",
    "random_draw",
    "refuse",
    "source_of",
    "trace",
    "trace_model",
    "traceable",
    "variable_read",
]


# -- which layers are traced ----------------------------------------------------------------------
def is_functional(model) -> bool:
    """A Functional or Sequential model (read from its own graph, not traced)."""
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    return isinstance(model, (Functional, Sequential))


def is_builtin(layer) -> bool:
    """A class shipped with Keras (``keras.src...``), as opposed to one the user wrote."""
    module = type(layer).__module__ or ""
    return module == "keras" or module.startswith(("keras.", "keras_hub.", "keras_nlp.", "keras_cv."))


def traceable(layer, trace_lambda: bool = True) -> bool:
    """Whether a layer without a converter is traced (see :func:`trace`).

    User-written ``Layer`` subclasses and subclassed ``Model``s are; ``Lambda`` layers too (unless
    ``trace_lambda`` is off: a ``.keras`` file loaded in safe mode). A built-in Keras layer without
    a converter is not: tracing would convert Keras's internals, not code the user recognises, so
    it stays refused by name.
    """
    import keras

    if not isinstance(layer, keras.layers.Layer) or is_functional(layer):
        return False
    if isinstance(layer, keras.layers.Lambda):
        return trace_lambda
    return not is_builtin(layer)


# -- tracing --------------------------------------------------------------------------------------
@dataclass
class Trace:
    """One traced ``call()``: fresh inputs, outputs, and the user's attribute names."""

    inputs: list  # fresh KerasTensors, in the order of the traced node's input tensors
    outputs: list
    input_names: list[str]  # forward() argument names
    attributes: dict[int, str] = field(default_factory=dict)  # id(layer or variable) -> attribute


def attribute_names(layer) -> dict[int, str]:
    """id(inner layer or Variable) -> the attribute the user's code holds it in.

    ``self.attention = MultiHeadAttention(...)`` names that layer ``attention``; a list of layers
    (``self.blocks = [Dense(), Dense()]``) names them ``blocks_0``, ``blocks_1``.
    """
    import keras

    names: dict[int, str] = {}
    for name, value in vars(layer).items():
        if name.startswith("_"):
            continue
        items = [(name, value)]
        if isinstance(value, (list, tuple)):
            items = [(f"{name}_{i}", v) for i, v in enumerate(value)]
        elif isinstance(value, dict):
            items = [(f"{name}_{k}", v) for k, v in value.items() if isinstance(k, str)]
        for label, item in items:
            if isinstance(item, (keras.layers.Layer, keras.Variable)):
                names.setdefault(id(item), label)
    return names


def _argument_names(layer, args, kwargs, tensors) -> list[str]:
    """A forward() argument name for each tensor: the call() parameter it was passed as."""
    import keras

    try:
        bound = inspect.signature(layer.call).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        bound = {"x": (args, kwargs)}
    names: dict[int, str] = {}
    unpacked = _unpacked_names(layer.call)
    for parameter, value in bound.items():
        flat = [t for t in keras.tree.flatten(value) if isinstance(t, keras.KerasTensor)]
        parts = unpacked.get(parameter)
        if parts is None or len(parts) != len(flat) or not isinstance(value, (list, tuple)):
            parts = [parameter] if len(flat) == 1 else [f"{parameter}_{i}" for i in range(len(flat))]
        for tensor, name in zip(flat, parts):
            names.setdefault(id(tensor), name)
    return [names.get(id(t), "x") for t in tensors]


def _unpacked_names(function) -> dict[str, list[str]]:
    """``{"inputs": ["z_mean", "z_log_var"]}`` for a call() starting ``z_mean, z_log_var = inputs``.

    A list argument's parts then keep the names the user's code gives them. {} when the source
    is not available or not of that form.
    """
    import ast
    import textwrap

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return {}
    definition = tree.body[0] if tree.body else None
    if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return {}
    found: dict[str, list[str]] = {}
    for statement in definition.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1):
            continue
        target, value = statement.targets[0], statement.value
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, ast.Name):
            if all(isinstance(element, ast.Name) for element in target.elts):
                found.setdefault(value.id, [element.id for element in target.elts])
    return found


def _user_frame(error: BaseException, layer) -> str | None:
    """``file:line: source`` of the deepest traceback frame in the user's code."""
    skip = ("keras", "tensorflow", "torch", "numpy", "kerastorch_magic", "optree", "tf_keras")
    try:
        own_file = inspect.getsourcefile(type(layer))
    except (TypeError, OSError):
        own_file = None
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    user = None
    for filename, lineno in frames:
        parts = set(re.split(r"[\\/]", filename))
        if filename == own_file or not (parts & {"site-packages", "dist-packages"} or parts & set(skip)):
            user = (filename, lineno)
    if user is None:
        return None
    filename, lineno = user
    source = linecache.getline(filename, lineno).strip()
    short = os.path.basename(filename) if filename.startswith(os.sep) else filename
    return f"{short}:{lineno}" + (f": `{source}`" if source else "")


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    if isinstance(error, UnknownSizeError):  # its message says what and why
        return text
    if "UnknownSize" in text or "SizeProduct" in text:  # given to an op that wants a number
        return f"{UNSUPPORTED_SIZE_USE} (here given to an op that needs a number)"
    if "KerasTensor cannot be used as input to a TensorFlow function" in text:
        return "a raw TensorFlow call on a symbolic tensor; use keras.ops (or register a converter)"
    if isinstance(error, TypeError) and "cannot be used as a boolean" in text:
        return "Python control flow on a tensor value (`if`/`while` on a symbolic tensor); use ops.where"
    return f"{type(error).__name__}: {text}"


def refuse(layer, qualified_name: str, why: str) -> ConversionError:
    return ConversionError(
        f"layer {qualified_name!r} ({type(layer).__name__}): {why}", [(qualified_name, type(layer).__name__)]
    )


def trace(layer, arguments, qualified_name: str) -> Trace:
    """Run ``layer.call`` on fresh symbolic inputs shaped like ``arguments``' tensors.

    ``arguments`` is the keras Node's ``SymbolicArguments`` (args, kwargs, keras_tensors) of the
    call being traced. Inference behaviour is traced (``training=False`` when call() takes it).
    """
    import keras

    fresh: dict[int, object] = {}
    inputs = []
    for tensor in arguments.keras_tensors:
        # A bare KerasTensor: a graph entry point (Keras gives it an empty history when an op
        # reads it); the walk starts its values there. keras.Input would cost a layer each.
        new = keras.KerasTensor(tuple(tensor.shape), dtype=tensor.dtype)
        fresh.setdefault(id(tensor), new)
        inputs.append(fresh[id(tensor)])
    # At run time each input carries its Keras mask, which inner layers read themselves
    # (MultiHeadAttention's query/value masks): the fresh inputs carry them too, the one call()
    # was given as mask=, or one more input after them (see masks.traced_input_masks).
    extra = [mask for _, mask in traced_input_masks(layer, arguments)]
    for mask in extra:
        inputs.append(fresh.setdefault(id(mask), keras.KerasTensor(tuple(mask.shape), dtype=mask.dtype)))
    for tensor in arguments.keras_tensors:
        mask = getattr(tensor, "_keras_mask", None)
        if mask is not None and id(mask) in fresh:
            fresh[id(tensor)]._keras_mask = fresh[id(mask)]

    def swap(value):
        return fresh.get(id(value), value) if isinstance(value, keras.KerasTensor) else value

    args, kwargs = keras.tree.map_structure(swap, (tuple(arguments.args), dict(arguments.kwargs)))
    traced = _run(layer, args, kwargs, inputs, qualified_name)
    if extra:  # forward(self, inputs, encoder_outputs, inputs_mask, encoder_outputs_mask)
        owners = {
            id(getattr(t, "_keras_mask", None)): name for t, name in zip(traced.inputs, traced.input_names)
        }
        first = len(traced.input_names) - len(extra)
        for position, mask in enumerate(traced.inputs[first:], start=first):
            traced.input_names[position] = f"{owners.get(id(mask), 'input')}_mask"
    return traced


def trace_model(model, qualified_name: str) -> Trace:
    """Trace a built subclassed model on inputs shaped like those it was built or first called with."""
    import keras

    # model.build(None) (and Keras's own build of a model never called) records {"input_shape": None}.
    values = [v for v in (getattr(model, "_build_shapes_dict", None) or {}).values() if v is not None]

    def no_shape(what: str = "input shape") -> ConversionError:
        why = (
            f"Keras recorded no {what} when it was built"
            if model.built
            else "a subclassed model that was never built or called has no input shape"
        )
        return refuse(
            model,
            qualified_name,
            f"{why} to trace it with; build it with its input shape first, "
            "e.g. model.build((None, 28, 28, 1)), or call it once on data",
        )

    if not model.built or not values:
        raise no_shape()

    def is_shape(value) -> bool:
        return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)

    def make_input(shape):
        if shape is None:  # one of several inputs built without a shape
            raise no_shape("shape for one of its inputs")
        return keras.KerasTensor((None, *tuple(shape)[1:]))

    args = [
        keras.tree.map_shape_structure(make_input, v) if not is_shape(v) else make_input(v) for v in values
    ]
    inputs = [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)]
    return _run(model, tuple(args), {}, inputs, qualified_name)


def _run(layer, args, kwargs, inputs, qualified_name: str) -> Trace:
    import keras

    signature = inspect.signature(layer.call).parameters
    # Inference behaviour; a call() without `training` is not given it (Keras's __call__ drops
    # it too, and a nested Functional passes it to every layer it calls).
    kwargs = {key: value for key, value in kwargs.items() if key != "training"}
    if "training" in signature:
        kwargs["training"] = False
    attributes = attribute_names(layer)
    recover_initializers(layer)
    try:
        with (
            layer_calls_patched(),
            random_patched(),
            reshape_patched(),
            sizes_patched(),
            tensorflow_twins(layer),
            weights_symbolic(layer, attributes),
            active(True),
        ):
            outputs = layer.call(*args, **kwargs)
        check_recorded(keras.tree.flatten(outputs))
    except ConversionError:
        raise
    except Exception as error:  # noqa: BLE001 - anything the user's call() raises is refused by name
        where = _user_frame(error, layer)
        raise refuse(
            layer,
            qualified_name,
            f"cannot trace its call(): {_reason(error)}" + (f" at {where}" if where else ""),
        ) from error
    flat = keras.tree.flatten(outputs)
    if not flat or not all(isinstance(t, keras.KerasTensor) for t in flat):
        kinds = sorted({type(t).__name__ for t in flat if not isinstance(t, keras.KerasTensor)})
        why = (
            "returns no tensor"
            if not flat
            else f"returns values computed without its inputs ({', '.join(kinds)})"
        )
        raise refuse(layer, qualified_name, f"cannot trace its call(): it {why}")
    names = _argument_names(layer, args, kwargs, inputs)
    return Trace(inputs, flat, names, attributes)


def source_of(layer) -> str | None:
    """``file:line`` where the layer's class (or a Lambda's function) is defined, for comments."""
    target = getattr(layer, "function", None) if type(layer).__name__ == "Lambda" else type(layer)
    if target is None:
        return None
    return _definition(target)


@functools.lru_cache(maxsize=256)
def _definition(target) -> str | None:
    code = getattr(target, "__code__", None)
    try:
        filename = inspect.getsourcefile(target)
        line = code.co_firstlineno if code is not None else inspect.getsourcelines(target)[1]
    except (TypeError, OSError):
        return None
    if not filename or filename.startswith("<"):
        return None
    return f"{os.path.basename(filename)}:{line}"


def class_name_of(layer) -> str:
    """The generated class's name: the Keras class's, a Lambda's function's in CamelCase."""
    if type(layer).__name__ == "Lambda":
        function = getattr(layer, "function", None)
        name = getattr(function, "__name__", "<lambda>")
        if name.isidentifier():
            return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) or "Lambda"
        return "Lambda"
    return type(layer).__name__
