"""The trace's own graph entry points: weight reads, eagerly computed constants, random draws.

Each is a keras ``Operation`` called with no inputs, so it records a node the graph walk reaches
like any other; :mod:`conversion` turns them into ``self.<weight>``, ``torch.arange(...)``/buffers
and ``torch.randn(...)``.
"""

from __future__ import annotations

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
    operation.shape = tuple(None if d is None else int(d) for d in shape)
    operation.dtype = str(dtype or keras.config.floatx())
    return operation.symbolic_call()


def is_random_draw(operation) -> bool:
    return type(operation).__name__ == "RandomDraw" and isinstance(operation, _PseudoOperation)


def is_variable_read(operation) -> bool:
    return type(operation).__name__ == "VariableRead" and isinstance(operation, _PseudoOperation)


def is_constant(operation) -> bool:
    return type(operation).__name__ == "Constant" and isinstance(operation, _PseudoOperation)
