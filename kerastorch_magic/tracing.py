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
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import linecache
import os
import re
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from .registry import ConversionError

_STATE = threading.local()


def _keras_operation_class():
    from keras.src.ops.operation import Operation

    return Operation


class _PseudoOperation:
    """Mixin of the trace's own graph entry points (no inputs, one output)."""

    def compute_output_spec(self, *args, **kwargs):
        import keras

        return keras.KerasTensor(self.shape, dtype=self.dtype)


def _make_pseudo(kind: str):
    Operation = _keras_operation_class()

    class Pseudo(_PseudoOperation, Operation):
        pass

    Pseudo.__name__ = Pseudo.__qualname__ = kind
    return Pseudo


_CLASSES: dict[str, type] = {}


def _pseudo_class(kind: str) -> type:
    if kind not in _CLASSES:
        _CLASSES[kind] = _make_pseudo(kind)
    return _CLASSES[kind]


def variable_read(variable):
    """A symbolic tensor standing for a read of ``variable`` (a :class:`VariableRead` node)."""
    operation = _pseudo_class("VariableRead")(name="variable_read")
    operation.variable = variable
    operation.shape, operation.dtype = tuple(variable.shape), str(variable.dtype)
    return operation.symbolic_call()


def constant(value):
    """A symbolic tensor standing for a concrete array computed while tracing (a :class:`Constant`)."""
    array = np.asarray(value)
    operation = _pseudo_class("Constant")(name="constant")
    operation.value = array
    operation.shape, operation.dtype = tuple(array.shape), str(array.dtype)
    return operation.symbolic_call()


def random_draw(kind: str, shape, low: float, high: float, dtype):
    """A symbolic tensor standing for ``keras.random.normal``/``uniform`` drawn at inference.

    ``low``/``high`` are the mean and standard deviation (normal) or the bounds (uniform); an
    unknown dimension (None) is the batch size of the call's input.
    """
    import keras

    operation = _pseudo_class("RandomDraw")(name=f"random_{kind}")
    operation.kind, operation.low, operation.high = kind, float(low), float(high)
    operation.shape = tuple(None if d is None else int(d) for d in shape)
    operation.dtype = str(dtype or keras.config.floatx())
    return operation.symbolic_call()


def is_random_draw(operation) -> bool:
    return type(operation).__name__ == "RandomDraw" and isinstance(operation, _PseudoOperation)


def is_variable_read(operation) -> bool:
    return type(operation).__name__ == "VariableRead" and isinstance(operation, _PseudoOperation)


def is_constant(operation) -> bool:
    return type(operation).__name__ == "Constant" and isinstance(operation, _PseudoOperation)


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


def _tracing() -> bool:
    return getattr(_STATE, "active", False)


@contextlib.contextmanager
def _active(value: bool):
    previous = getattr(_STATE, "active", False)
    _STATE.active = value
    try:
        yield
    finally:
        _STATE.active = previous


def _is_concrete(value) -> bool:
    import keras

    if isinstance(value, (keras.KerasTensor, keras.Variable)):
        return False
    return isinstance(value, np.ndarray) or keras.ops.is_tensor(value)


def _patched_layer_call(original):
    def __call__(self, *args, **kwargs):
        if not _tracing():
            return original(self, *args, **kwargs)
        import keras

        # Arrays computed eagerly from shapes (the positions of a positional Embedding, a causal
        # attention mask) become graph constants: the call is recorded with them as inputs, so
        # the converter sees them (and the inner layer's weights stay weights).
        def lift(value):
            return constant(keras.ops.convert_to_numpy(value)) if _is_concrete(value) else value

        args, kwargs = keras.tree.map_structure(lift, (args, kwargs))
        with _active(False):  # the inner layer's own call is not the user's code
            return original(self, *args, **kwargs)

    __call__._kerastorch_patch = True
    return __call__


@contextlib.contextmanager
def _layer_calls_patched():
    from keras.src.layers.layer import Layer

    original = Layer.__call__
    if getattr(original, "_kerastorch_patch", False):  # nested trace: already patched
        yield
        return
    Layer.__call__ = _patched_layer_call(original)
    try:
        yield
    finally:
        Layer.__call__ = original


def _patched_random(kind: str, original):
    def draw(shape, a=None, b=None, dtype=None, seed=None, **kwargs):
        if not _tracing():
            return original(shape, *(v for v in (a, b) if v is not None), dtype=dtype, seed=seed, **kwargs)
        names = ("mean", "stddev") if kind == "normal" else ("minval", "maxval")
        defaults = (0.0, 1.0)
        low = kwargs.get(names[0], a if a is not None else defaults[0])
        high = kwargs.get(names[1], b if b is not None else defaults[1])
        return random_draw(kind, shape, low, high, dtype)

    draw._kerastorch_patch = True
    return draw


@contextlib.contextmanager
def _random_patched():
    """keras.random.normal/uniform called by the traced code are recorded, not drawn once.

    (A draw made while tracing would otherwise be baked into the port as a constant.)
    """
    import keras
    from keras.src.random import random as keras_random

    saved = []
    for module in (keras.random, keras_random):
        for kind in ("normal", "uniform"):
            original = getattr(module, kind)
            if getattr(original, "_kerastorch_patch", False):
                continue
            saved.append((module, kind, original))
            setattr(module, kind, _patched_random(kind, original))
    try:
        yield
    finally:
        for module, kind, original in saved:
            setattr(module, kind, original)


# -- raw TensorFlow calls with a keras.ops twin --------------------------------------------------
# keras-io examples written for Keras 2 call tf.* on tensors inside call(). While tracing, the
# common ones run as their keras.ops twin (recorded as graph nodes like any keras.ops call); others
# are refused by name. Each entry: tf path -> function(keras.ops, *args, **kwargs) with TF's names.
def _tf_dtype(dtype):
    return getattr(dtype, "name", dtype)


def _tf_softmax(ops, logits, axis=None):
    return ops.softmax(logits, axis=-1 if axis is None else axis)


def _tf_matmul(ops, a, b, transpose_a=False, transpose_b=False):
    if transpose_a:
        a = ops.swapaxes(a, -1, -2)
    if transpose_b:
        b = ops.swapaxes(b, -1, -2)
    return ops.matmul(a, b)


_TF_EQUIVALENTS = {
    "shape": lambda ops, input, out_type=None: ops.shape(input),
    "reshape": lambda ops, tensor, shape: ops.reshape(tensor, tuple(shape)),
    "transpose": lambda ops, a, perm=None: ops.transpose(a, perm),
    "matmul": _tf_matmul,
    "concat": lambda ops, values, axis: ops.concatenate(values, axis=axis),
    "stack": lambda ops, values, axis=0: ops.stack(values, axis=axis),
    "expand_dims": lambda ops, input, axis: ops.expand_dims(input, axis),
    "squeeze": lambda ops, input, axis=None: ops.squeeze(input, axis),
    "cast": lambda ops, x, dtype: ops.cast(x, _tf_dtype(dtype)),
    "reduce_mean": lambda ops, input_tensor, axis=None, keepdims=False: ops.mean(
        input_tensor, axis, keepdims
    ),
    "reduce_sum": lambda ops, input_tensor, axis=None, keepdims=False: ops.sum(input_tensor, axis, keepdims),
    "reduce_max": lambda ops, input_tensor, axis=None, keepdims=False: ops.max(input_tensor, axis, keepdims),
    "reduce_min": lambda ops, input_tensor, axis=None, keepdims=False: ops.min(input_tensor, axis, keepdims),
    "nn.softmax": _tf_softmax,
    "nn.relu": lambda ops, features: ops.relu(features),
    "nn.gelu": lambda ops, features, approximate=False: ops.gelu(features, approximate),
    "sigmoid": lambda ops, x: ops.sigmoid(x),
    "nn.sigmoid": lambda ops, x: ops.sigmoid(x),
    "tanh": lambda ops, x: ops.tanh(x),
    "nn.tanh": lambda ops, x: ops.tanh(x),
    "sqrt": lambda ops, x: ops.sqrt(x),
    "math.sqrt": lambda ops, x: ops.sqrt(x),
    "square": lambda ops, x: ops.square(x),
    "math.square": lambda ops, x: ops.square(x),
    "exp": lambda ops, x: ops.exp(x),
    "math.exp": lambda ops, x: ops.exp(x),
    "einsum": lambda ops, equation, *inputs: ops.einsum(equation, *inputs),
    "random.normal": lambda ops, shape, mean=0.0, stddev=1.0, dtype="float32", seed=None: random_draw(
        "normal", shape, mean, stddev, _tf_dtype(dtype)
    ),
    "random.uniform": lambda ops, shape, minval=0, maxval=None, dtype="float32", seed=None: random_draw(
        "uniform", shape, minval, 1.0 if maxval is None else maxval, _tf_dtype(dtype)
    ),
}
# Twins used while tracing even without a symbolic argument (a draw would be baked in otherwise).
_TF_ALWAYS = {"random.normal", "random.uniform"}


def _tf_twin(path: str, original, twin):
    def call(*args, **kwargs):
        import keras
        from keras.src.backend.common.keras_tensor import any_symbolic_tensors

        if not _tracing() or not (path in _TF_ALWAYS or any_symbolic_tensors(args, kwargs)):
            return original(*args, **kwargs)
        kwargs.pop("name", None)
        try:
            return twin(keras.ops, *args, **kwargs)
        except TypeError:  # an option the twin does not take: TensorFlow refuses it as before
            return original(*args, **kwargs)

    call._kerastorch_patch = True
    return call


@contextlib.contextmanager
def _tensorflow_twins():
    """While tracing, ``tf.shape(x)``, ``tf.reshape``... on symbolic tensors run as keras.ops."""
    tf = sys.modules.get("tensorflow")
    saved = []
    if tf is not None:
        for path, twin in _TF_EQUIVALENTS.items():
            *parents, name = path.split(".")
            module = tf
            for parent in parents:
                module = getattr(module, parent, None)
            original = getattr(module, name, None) if module is not None else None
            if original is None or getattr(original, "_kerastorch_patch", False):
                continue
            saved.append((module, name, original))
            setattr(module, name, _tf_twin(path, original, twin))
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


@contextlib.contextmanager
def _weights_symbolic(layer, attributes: dict[int, str]):
    """Attributes holding the layer's Variables hold VariableRead tensors while tracing."""
    import keras

    swapped = []
    for name, value in list(vars(layer).items()):
        if isinstance(value, keras.Variable):
            attributes.setdefault(id(value), name)
            swapped.append((name, value))
            object.__setattr__(layer, name, variable_read(value))
    try:
        yield
    finally:
        for name, value in swapped:
            object.__setattr__(layer, name, value)


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
    for parameter, value in bound.items():
        flat = [t for t in keras.tree.flatten(value) if isinstance(t, keras.KerasTensor)]
        for i, tensor in enumerate(flat):
            names.setdefault(id(tensor), parameter if len(flat) == 1 else f"{parameter}_{i}")
    return [names.get(id(t), "x") for t in tensors]


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

    def swap(value):
        return fresh.get(id(value), value) if isinstance(value, keras.KerasTensor) else value

    args, kwargs = keras.tree.map_structure(swap, (tuple(arguments.args), dict(arguments.kwargs)))
    return _run(layer, args, kwargs, inputs, qualified_name)


def trace_model(model, qualified_name: str) -> Trace:
    """Trace a built subclassed model on inputs shaped like those it was built or first called with."""
    import keras

    shapes = getattr(model, "_build_shapes_dict", None)
    if not model.built or not shapes:
        why = (
            "Keras recorded no input shape when it was built"
            if model.built
            else "a subclassed model that was never built or called has no input shape"
        )
        raise refuse(
            model,
            qualified_name,
            f"{why} to trace it with; build it with its input shape first, "
            "e.g. model.build((None, 28, 28, 1)), or call it once on data",
        )

    def is_shape(value) -> bool:
        return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)

    def make_input(shape):
        return keras.KerasTensor((None, *tuple(shape)[1:]))

    values = [v for v in shapes.values() if v is not None]
    args = [
        keras.tree.map_shape_structure(make_input, v) if not is_shape(v) else make_input(v) for v in values
    ]
    inputs = [t for t in keras.tree.flatten(args) if isinstance(t, keras.KerasTensor)]
    return _run(model, tuple(args), {}, inputs, qualified_name)


def _run(layer, args, kwargs, inputs, qualified_name: str) -> Trace:
    import keras

    signature = inspect.signature(layer.call).parameters
    if "training" in signature:
        kwargs = {**kwargs, "training": False}
    attributes = attribute_names(layer)
    recover_initializers(layer)
    try:
        with (
            _layer_calls_patched(),
            _random_patched(),
            _tensorflow_twins(),
            _weights_symbolic(layer, attributes),
            _active(True),
        ):
            outputs = layer.call(*args, **kwargs)
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


# -- initialisers of traced weights ---------------------------------------------------------------
def initializer_of(variable):
    """The Keras initialiser (serialised) ``add_weight`` got for ``variable``, if it is known.

    A Variable does not remember its initialiser; :func:`recover_initializers` finds it.
    """
    return getattr(variable, "_kerastorch_initializer", None)


def recover_initializers(layer) -> None:
    """Find the initialiser of each of ``layer``'s own weights by building a twin of the layer.

    The twin (``from_config`` + ``build`` with the recorded build shapes) runs the user's
    ``add_weight`` calls again while they are recorded; its weights come in the same order as the
    original's. Best effort: a layer that cannot be rebuilt keeps torch's uninitialised values
    in ``reset_parameters`` (and says so in a comment).
    """
    import warnings

    import keras
    from keras.src.layers.layer import Layer

    own = {
        True: list(getattr(layer, "_trainable_variables", [])),
        False: list(getattr(layer, "_non_trainable_variables", [])),
    }
    if not any(own.values()) or all(initializer_of(v) is not None for v in own[True] + own[False]):
        return
    original = Layer.add_weight
    signature = inspect.signature(original)
    made: list[tuple] = []

    def add_weight(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs).arguments
        made.append((self, bound.get("initializer"), bound.get("trainable", True)))
        return original(self, *args, **kwargs)

    Layer.add_weight = add_weight
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin = type(layer).from_config(layer.get_config())
            shapes = getattr(layer, "_build_shapes_dict", None) or {}
            if not twin.built and shapes:
                twin.build(*shapes.values())
    except Exception:  # noqa: BLE001 - best effort, see the docstring
        return
    finally:
        Layer.add_weight = original
    found = {True: [], False: []}
    for owner, initializer, trainable in made:
        if owner is twin:
            found[bool(trainable)].append(initializer)
    for trainable, variables in own.items():
        if len(found[trainable]) != len(variables):
            continue
        for variable, initializer in zip(variables, found[trainable]):
            if initializer is None:
                initializer = (
                    "glorot_uniform" if "float" in str(variable.dtype) else "zeros"
                )  # Keras's default
            if not isinstance(initializer, str):
                try:
                    initializer = keras.initializers.serialize(initializer)
                except Exception:  # noqa: BLE001 - a custom initialiser: unknown
                    continue
            try:
                variable._kerastorch_initializer = initializer
            except AttributeError:
                pass


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
