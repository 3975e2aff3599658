"""Numbers and shapes as source text of generated code: one place, lossless.

Every converter family (and :mod:`kerastorch_magic.initializers`) writes constants into the code
it generates. They go through here so that a number in the code is exactly the number Keras
uses (``repr`` of the float, never rounded: a ``Constant(0.1234567)`` initialiser or an epsilon
of ``1.001e-05`` reads back bit for bit) and a shape is written the way a person writes it.
No family module imports another one for formatting.
"""

from __future__ import annotations

from collections.abc import Iterable


def number(value) -> str:
    """Shortest source text that reads back as exactly ``float(value)`` (``0.001``, ``1e-07``)."""
    return repr(float(value))


def int_or_tuple(values: Iterable[int]) -> str:
    """``3`` for one value, ``(1, 2)`` for several: a ``dim=`` or ``normalized_shape`` argument."""
    values = [int(v) for v in values]
    return str(values[0]) if len(values) == 1 else "(" + ", ".join(str(v) for v in values) + ")"


def compact(values: tuple) -> str:
    """``3`` for (3, 3), ``(1, 2)`` otherwise: a per-axis argument (``kernel_size=``, ``stride=``)."""
    if len(set(values)) == 1:
        return str(values[0])
    return "(" + ", ".join(str(v) for v in values) + ")"


def size_args(shape: Iterable[int]) -> str:
    """``2, 3`` (``()`` for a scalar): the size arguments of ``torch.zeros(...)``/``torch.empty(...)``."""
    return ", ".join(str(int(d)) for d in shape) or "()"
