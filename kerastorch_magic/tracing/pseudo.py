"""The trace's own graph entry points: weight reads, eagerly computed constants, random draws.

Each is a keras ``Operation`` called with no inputs, so it records a node the graph walk reaches
like any other; :mod:`conversion` turns them into ``self.<weight>``, ``torch.arange(...)``/buffers
and ``torch.randn(...)``. The sized operations (:func:`sized_operation`: an ``arange`` over a
length unknown while tracing...) are the one kind with inputs: the tensors whose runtime sizes
they read, so their converters (``converters/ops_dynamic.py``) write ``x.shape[1]``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


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
    from .sizes import UnknownSize  # ops.shape(x) while tracing: the batch (or a refused size)

    operation.shape = tuple(None if d is None or isinstance(d, UnknownSize) else int(d) for d in shape)
    operation.dtype = str(dtype or keras.config.floatx())
    return operation.symbolic_call()


def random_dropout(inputs, rate: float, alpha: bool = False):
    """A symbolic tensor standing for dropout applied at inference (``keras.random.dropout``).

    Monte Carlo dropout (a Dropout subclass whose call() passes ``training=True``): random at
    every call, written as torch's ``F.dropout(x, p, training=True)`` (``alpha``: AlphaDropout's,
    ``F.alpha_dropout``).
    """
    operation = _pseudo_class("RandomDropout")(name="dropout")
    operation.rate, operation.alpha = float(rate), alpha
    operation.shape, operation.dtype = tuple(inputs.shape), str(inputs.dtype)
    return operation.symbolic_call(inputs)


class SizeOf(NamedTuple):
    """A sized operation's size known only at run time: axis ``axis`` of its input ``input``."""

    input: int
    axis: int


def sized_operation(kind: str, operands: list, shape: tuple, dtype: str, **attributes):
    """A symbolic tensor computed from sizes unknown while tracing (``tracing.sizes``).

    ``attributes`` (``stop=``, ``target=``...) hold ints and :class:`~.sizes.UnknownSize`s, alone or
    in tuples; each UnknownSize becomes a :class:`SizeOf` reading the tensor it was taken from,
    which joins ``operands`` as an input of the recorded node (once per tensor).
    """
    from .sizes import UnknownSize

    inputs = list(operands)

    def reference(value):
        if not isinstance(value, UnknownSize):
            return value
        index = next((i for i, t in enumerate(inputs) if t is value.tensor), None)
        if index is None:
            inputs.append(value.tensor)
            index = len(inputs) - 1
        return SizeOf(index, value.axis)

    operation = _pseudo_class(kind)(name=naming_of(kind))
    for name, value in attributes.items():
        setattr(
            operation, name, tuple(map(reference, value)) if isinstance(value, tuple) else reference(value)
        )
    operation.shape, operation.dtype = tuple(shape), str(dtype)
    operation.reads_only_sizes = not operands  # not their values: local names look past it
    return operation.symbolic_call(*inputs)


def naming_of(kind: str) -> str:
    """``positions`` for an arange (what the values are), the op's own word otherwise."""
    return {"DynamicArange": "positions"}.get(kind, kind.removeprefix("Dynamic").lower())


def is_random_draw(operation) -> bool:
    return type(operation).__name__ == "RandomDraw" and isinstance(operation, _PseudoOperation)


def is_random(operation) -> bool:
    """A draw, or an operation of tensors that draws (dropout at inference): random at every call."""
    return is_random_draw(operation) or (
        type(operation).__name__ == "RandomDropout" and isinstance(operation, _PseudoOperation)
    )


def is_variable_read(operation) -> bool:
    return type(operation).__name__ == "VariableRead" and isinstance(operation, _PseudoOperation)


def is_constant(operation) -> bool:
    return type(operation).__name__ == "Constant" and isinstance(operation, _PseudoOperation)
