"""Sizes unknown while tracing: ``ops.shape(x)[1]`` of an axis of length None.

A model on ``keras.Input((None,))`` takes sequences of any length; tracing runs ``call()`` on
symbolic tensors, where Keras's ``ops.shape(x)[1]`` is None and ``ops.arange(None)`` an empty
array. A PyTorch port says the same thing exactly: ``torch.arange(x.shape[1])``. So while a
``call()`` is traced, ``keras.ops.shape`` gives an :class:`UnknownSize` (which tensor, which axis)
for each None, and the few ops that build from sizes take it and record a graph node reading that
tensor (:mod:`.pseudo`'s sized operations, converted by ``converters/ops_dynamic.py``):

* ``ops.arange(n)``, ``ops.arange(start, n, step)``: positions over the runtime length;
* ``ops.reshape(t, (1, n, n))``: a target holding runtime sizes;
* ``ops.tile(t, reps)`` with ``reps`` holding them, also as a :class:`SizeVector` built from
  ``ops.expand_dims(batch, -1)``, ``ops.concatenate``, ``ops.stack`` or ``ops.convert_to_tensor``
  of sizes (keras-io's causal mask tiled over the batch).

The batch size (axis 0) is an :class:`UnknownSize` too; where code passes it to an op that takes
a shape with an unknown batch (``ops.reshape(x, (batch, -1, 4))``, ``keras.random.normal``,
``ops.broadcast_to``) it becomes None again, which those converters read as the batch.
A product of sizes (``batch_size * num_nodes``, a :class:`SizeProduct`) is accepted as the one
entry of a reshape target that is not a known size: it becomes ``-1``, which infers exactly that
product (the element count is the same on both sides), as keras-io's graph LSTM folds its nodes
into the batch. Anything else done with a size (other arithmetic, comparisons, ``int()``) raises
:class:`UnknownSizeError` naming it, and the trace refuses the layer with that reason.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .pseudo import constant, sized_operation
from .scope import is_tracing

# What converts; quoted by every refusal so the user knows the way around it.
UNSUPPORTED_SIZE_USE = (
    "a size unknown while tracing (ops.shape(x)[i] of an axis of length None) converts only as an "
    "argument of ops.arange, ops.reshape or ops.tile (a reshape target may hold one product of "
    "sizes, the entry to infer; tile's repeats may be built with ops.expand_dims/concatenate/"
    "stack); give the model input a fixed length otherwise"
)


class UnknownSizeError(ValueError):
    """Something done with an :class:`UnknownSize` that the port cannot express."""


class _SizeWhileTracing:
    """What every size unknown while tracing refuses: any use the port cannot express."""

    __slots__ = ()

    def describe(self) -> str:
        raise NotImplementedError

    def refuse(self, what: str) -> UnknownSizeError:
        return UnknownSizeError(f"{what} {self.describe()}: {UNSUPPORTED_SIZE_USE}")

    def __bool__(self):
        raise self.refuse("the truth value of")

    def __index__(self):
        raise self.refuse("a Python integer from")

    __int__ = __index__

    def __float__(self):
        raise self.refuse("a Python float from")

    def __mul__(self, other):
        if isinstance(other, (int, np.integer)) and not isinstance(other, bool):
            return SizeProduct((self, int(other)))
        if isinstance(other, _SizeWhileTracing):
            return SizeProduct((self, other))
        raise self.refuse(f"`*` by {other!r} of")

    __rmul__ = __mul__


class UnknownSize(_SizeWhileTracing):
    """``ops.shape(tensor)[axis]`` of an axis whose length is None while tracing."""

    __slots__ = ("tensor", "axis")

    def __init__(self, tensor, axis: int):
        self.tensor, self.axis = tensor, axis

    @property
    def is_batch(self) -> bool:
        return self.axis == 0

    def describe(self) -> str:
        what = "the batch size" if self.is_batch else f"the length of axis {self.axis}"
        return f"{what} of a {tuple(self.tensor.shape)} tensor (unknown while tracing)"

    def __repr__(self) -> str:
        return f"UnknownSize(axis={self.axis} of {tuple(self.tensor.shape)})"

    def __eq__(self, other):
        if isinstance(other, UnknownSize):
            return other.tensor is self.tensor and other.axis == self.axis
        raise self.refuse(f"comparing {other!r} with")

    def __hash__(self) -> int:
        return hash((id(self.tensor), self.axis))


class SizeProduct(_SizeWhileTracing):
    """A product of sizes, at least one unknown: ``batch_size * num_nodes``. Only a reshape target
    may hold it, as its one entry that is not a known size (it becomes ``-1`` there)."""

    __slots__ = ("factors",)

    def __init__(self, factors):
        flat: list = []
        for factor in factors:
            flat += factor.factors if isinstance(factor, SizeProduct) else [factor]
        self.factors = tuple(flat)

    def describe(self) -> str:
        return " * ".join(str(f) if isinstance(f, int) else f"({f.describe()})" for f in self.factors)

    def __repr__(self) -> str:
        return f"SizeProduct{self.factors}"

    def __eq__(self, other):
        raise self.refuse(f"comparing {other!r} with")

    __hash__ = None


def _arithmetic(symbol: str):
    def refuse(self, *other):
        raise self.refuse(f"`{symbol}` on")

    return refuse


for _name, _symbol in {
    "add": "+", "sub": "-", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**",
}.items():  # fmt: skip
    setattr(_SizeWhileTracing, f"__{_name}__", _arithmetic(_symbol))
    setattr(_SizeWhileTracing, f"__r{_name}__", _arithmetic(_symbol))
for _name, _symbol in {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "ne": "!="}.items():
    setattr(_SizeWhileTracing, f"__{_name}__", _arithmetic(_symbol))
_SizeWhileTracing.__neg__ = _arithmetic("-")


class SizeVector:
    """A 1-D integer tensor of sizes, some unknown: ``ops.concatenate([ops.expand_dims(batch, -1),
    [1, 1]])``. Only a tile's repeats or a reshape's target may read it."""

    def __init__(self, entries):
        self.entries = tuple(entries)
        self.shape, self.ndim = (len(self.entries),), 1

    def _first_unknown(self) -> UnknownSize:
        return next(e for e in self.entries if isinstance(e, UnknownSize))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise self._first_unknown().refuse(f"`.{name}` of a tensor holding")

    def __repr__(self) -> str:
        return f"SizeVector{self.entries}"


def _unknown(value) -> bool:
    return isinstance(value, (UnknownSize, SizeVector))


def _entries(value) -> tuple | None:
    """A shape-like argument's entries (ints and UnknownSizes); None when it holds no UnknownSize."""
    if isinstance(value, SizeVector):
        return value.entries
    if isinstance(value, (tuple, list)) and any(isinstance(v, UnknownSize) for v in value):
        return tuple(int(v) if isinstance(v, np.integer) else v for v in value)
    return None


def _symbolic(x):
    """The operand of a sized operation as a graph tensor (a concrete array as a Constant)."""
    import keras

    return x if isinstance(x, keras.KerasTensor) else constant(keras.ops.convert_to_numpy(x))


def _as_none(value):
    """A shape with each UnknownSize as None, what Keras's own ops say for an unknown size."""
    entries = _entries(value)
    if entries is None:
        return value
    return type(value)(None if isinstance(v, UnknownSize) else v for v in entries)


def _plain_ints(value, what: str) -> tuple[int, ...]:
    """A constant 1-D integer array (a list, a numpy or backend tensor) joined to sizes."""
    import keras

    array = np.asarray(keras.ops.convert_to_numpy(value) if keras.ops.is_tensor(value) else value)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise UnknownSizeError(
            f"{what} of sizes with a {array.shape} {array.dtype} array: {UNSUPPORTED_SIZE_USE}"
        )
    return tuple(int(v) for v in array)


# -- the patched keras.ops functions (each delegates unless a size is involved) ---------------------
def shape(original):
    def patched(x):
        import keras

        if not isinstance(x, keras.KerasTensor):
            return original(x)
        return tuple(UnknownSize(x, axis) if d is None else d for axis, d in enumerate(x.shape))

    return patched


def arange(original):
    def patched(start, stop=None, step=None, dtype=None):
        if not any(_unknown(v) for v in (start, stop, step)):
            return original(start, stop, step, dtype)
        if stop is None:  # arange(n)
            start, stop = 0, start
        step = 1 if step is None else step
        if not isinstance(stop, UnknownSize) or _unknown(start) or _unknown(step):
            size = next(v for v in (start, stop, step) if isinstance(v, UnknownSize))
            raise size.refuse("ops.arange with a start or step of")
        numbers = (start, step)
        if not all(isinstance(v, (int, float, np.integer, np.floating)) for v in numbers):
            raise stop.refuse(f"ops.arange({start!r}, ..., {step!r}) over")
        if dtype is None:  # Keras: int32 from Python ints, floatx from a float
            import keras

            floats = any(isinstance(v, (float, np.floating)) for v in numbers)
            dtype = keras.config.floatx() if floats else "int32"
        return sized_operation("DynamicArange", [], (None,), str(dtype), start=start, stop=stop, step=step)

    return patched


def _product_as_inferred(newshape):
    """``newshape`` with its one :class:`SizeProduct` as ``-1``, where that infers exactly it: the
    product is the only entry that is not a known size or the batch, and no other entry is -1."""
    if isinstance(newshape, SizeVector):
        newshape = newshape.entries
    if not isinstance(newshape, (tuple, list)):
        return newshape
    products = [e for e in newshape if isinstance(e, SizeProduct)]
    if not products:
        return newshape
    others = [e for e in newshape if not isinstance(e, SizeProduct)]
    ambiguous = [e for e in others if isinstance(e, UnknownSize) and not e.is_batch or _is_minus_one(e)]
    if len(products) > 1 or ambiguous:  # (the batch stays itself: the port reads x.shape[0])
        raise products[0].refuse("a reshape target holding another unknown size besides")
    return type(newshape)(-1 if isinstance(e, SizeProduct) else e for e in newshape)


def _is_minus_one(entry) -> bool:
    return isinstance(entry, (int, np.integer)) and int(entry) == -1


def reshape(original):
    def patched(x, newshape):
        newshape = _product_as_inferred(newshape)
        entries = _entries(newshape)
        if entries is not None and not all(e.is_batch for e in entries if isinstance(e, UnknownSize)):
            x = _symbolic(x)
            shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in entries)
            return sized_operation("DynamicReshape", [x], shape, x.dtype, target=entries)
        return original(x, _as_none(newshape))

    return patched


def tile(original):
    def patched(x, repeats):
        entries = _entries(repeats)
        if entries is None:
            return original(x, repeats)
        x = _symbolic(x)
        rank = max(len(x.shape), len(entries))
        sizes = (1,) * (rank - len(x.shape)) + tuple(x.shape)  # NumPy pads both with leading 1s
        reps = (1,) * (rank - len(entries)) + entries
        shape = tuple(
            d * r if isinstance(d, int) and isinstance(r, int) else None for d, r in zip(sizes, reps)
        )
        return sized_operation("DynamicTile", [x], shape, x.dtype, repeats=reps)

    return patched


def expand_dims(original):
    def patched(x, axis):
        if not isinstance(x, UnknownSize):
            return original(x, axis)
        if axis not in (0, -1):
            raise x.refuse(f"ops.expand_dims(..., axis={axis}) of")
        return SizeVector((x,))

    return patched


def concatenate(original):
    def patched(xs, axis=0):
        vectors = [v for v in xs if isinstance(v, SizeVector)]
        if not vectors:
            return original(xs, axis)
        if axis not in (0, -1):
            raise vectors[0]._first_unknown().refuse(f"ops.concatenate(..., axis={axis}) of")
        entries: list = []
        for value in xs:
            is_vector = isinstance(value, SizeVector)
            entries += value.entries if is_vector else _plain_ints(value, "ops.concatenate")
        return SizeVector(entries)

    return patched


def stack(original):
    def patched(x, axis=0):
        if not any(isinstance(v, UnknownSize) for v in x):
            return original(x, axis)
        if axis not in (0, -1) or not all(isinstance(v, (UnknownSize, int, np.integer)) for v in x):
            raise next(v for v in x if isinstance(v, UnknownSize)).refuse("ops.stack of tensors with")
        return SizeVector(v if isinstance(v, UnknownSize) else int(v) for v in x)

    return patched


def convert_to_tensor(original):
    def patched(x, dtype=None, sparse=None, ragged=None):
        if isinstance(x, SizeVector):
            return x
        if isinstance(x, UnknownSize):
            raise x.refuse("ops.convert_to_tensor of")
        entries = _entries(x)
        if entries is None:
            return original(x, dtype=dtype, sparse=sparse, ragged=ragged)
        return SizeVector(v if isinstance(v, UnknownSize) else int(v) for v in entries)

    return patched


def as_none(original):
    """``ops.broadcast_to(x, ops.shape(y))`` and the like: unknown sizes are None, as in Keras."""

    def patched(x, shape, *args, **kwargs):
        return original(x, _as_none(shape), *args, **kwargs)

    return patched


PATCHES = {
    "shape": shape,
    "arange": arange,
    "reshape": reshape,
    "tile": tile,
    "expand_dims": expand_dims,
    "concatenate": concatenate,
    "stack": stack,
    "convert_to_tensor": convert_to_tensor,
    "broadcast_to": as_none,
}


@contextlib.contextmanager
def sizes_patched():
    """``keras.ops`` (the public module the user's code calls) with :data:`PATCHES` while tracing.

    Keras's own code calls ``keras.src.ops`` and never sees an :class:`UnknownSize`.
    """
    import keras

    saved = []
    for name, patch in PATCHES.items():
        original = getattr(keras.ops, name)
        if getattr(original, "_kerastorch_sizes", False):  # nested trace: already patched
            continue
        patched = patch(original)

        def gated(*args, _patched=patched, _original=original, **kwargs):
            return (_patched if is_tracing() else _original)(*args, **kwargs)

        gated._kerastorch_sizes = True
        gated.__wrapped__ = original
        saved.append((name, original))
        setattr(keras.ops, name, gated)
    try:
        yield
    finally:
        for name, original in saved:
            setattr(keras.ops, name, original)


def check_recorded(outputs) -> None:
    """Refuse a recorded op holding an :class:`UnknownSize` among its arguments.

    An op Keras records without reading the size (``x[:, :n]`` keeps it inside a slice) would
    otherwise fail later, in its converter, without naming the layer.
    """
    seen: set[int] = set()
    pending = list(outputs)
    while pending:
        history = getattr(pending.pop(), "_keras_history", None)
        if history is None or history.operation is None or id(history.operation) in seen:
            continue
        seen.add(id(history.operation))
        node = history.operation._inbound_nodes[history.node_index]
        arguments = getattr(node, "arguments", None)
        if arguments is not None:
            size = _find_unknown((arguments.args, arguments.kwargs))
            if size is not None:
                raise size.refuse(f"keras.ops {type(history.operation).__name__} given")
        pending.extend(node.input_tensors)


def _find_unknown(value):
    if isinstance(value, _SizeWhileTracing):
        return value
    if isinstance(value, slice):
        value = (value.start, value.stop, value.step)
    if isinstance(value, dict):
        value = tuple(value.values())
    if isinstance(value, (tuple, list)):
        return next((found for item in value if (found := _find_unknown(item)) is not None), None)
    return None
