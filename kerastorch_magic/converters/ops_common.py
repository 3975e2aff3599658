"""What every keras.ops converter needs: the call's arguments, dtypes and layouts.

A functional model records each ``keras.ops`` call (and each operator between Keras tensors:
``x + 1``, ``x[:, 2:]``, ``x != 0``) as a node whose ``layer`` is the Operation: its options are
attributes (``Sum.axis``, ``Gelu.approximate``), its operands the call's arguments, tensors or
constants. Axis arguments are Keras axes; inputs arrive in whatever torch layout their producer
left (``TensorSpec.perm``). Element-wise ops keep a layout and broadcast NumPy-style (operands
aligned on their last axes); the converters choose, per op, between computing in that layout
(mapping axes with ``perm``) and bringing the inputs to Keras's layout first.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from .. import layout
from ..registry import Converted, LayerCall, Step
from ._common import common_perm

# Keras dtype name -> torch dtype source.
_TORCH_DTYPES = {
    "float16": "torch.float16",
    "bfloat16": "torch.bfloat16",
    "float32": "torch.float32",
    "float64": "torch.float64",
    "uint8": "torch.uint8",
    "uint16": "torch.uint16",
    "uint32": "torch.uint32",
    "int8": "torch.int8",
    "int16": "torch.int16",
    "int32": "torch.int32",
    "int64": "torch.int64",
    "bool": "torch.bool",
}


def torch_dtype(call: LayerCall, dtype) -> str:
    """``torch.int32`` for Keras's ``"int32"`` (any dtype spelling Keras accepts)."""
    import keras

    name = keras.backend.standardize_dtype(dtype)
    if name not in _TORCH_DTYPES:
        raise call.unsupported(f"dtype {name!r} has no torch equivalent")
    return _TORCH_DTYPES[name]


def is_float(dtype: str) -> bool:
    return "float" in dtype


def arguments(call: LayerCall) -> dict[str, Any]:
    """The operation's call arguments by parameter name (``Where``: condition, x1, x2)."""
    node = call.node.keras_node
    signature = inspect.signature(call.layer.call)
    try:
        bound = signature.bind(*node.arguments.args, **node.arguments.kwargs)
    except TypeError as error:
        raise call.unsupported(f"cannot read the call's arguments ({error})") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def tensor_index(call: LayerCall, value) -> int | None:
    """Index into ``call.inputs`` of a symbolic tensor argument; None for a constant."""
    for index, tensor in enumerate(call.node.keras_node.input_tensors):
        if tensor is value:
            return index
    return None


def dtype_of(call: LayerCall, value) -> str:
    """The dtype of a call's tensor argument or constant array, as Keras names it."""
    import keras

    index = tensor_index(call, value)
    return call.inputs[index].dtype if index is not None else keras.backend.standardize_dtype(value.dtype)


def keras_layout(call: LayerCall, index: int) -> str:
    """Input ``index`` in Keras's own layout (batch first, channels last)."""
    return call.input_as(index, layout.identity(call.inputs[index].rank))


def value_in_keras_layout(call: LayerCall, value) -> str:
    """A tensor argument in Keras's layout, or a constant's source."""
    index = tensor_index(call, value)
    return call.operand(value) if index is None else keras_layout(call, index)


def result(
    call: LayerCall,
    expr: str,
    perm: tuple[int, ...] | None = None,
    comment: str | None = None,
    notes: list[str] | None = None,
) -> Converted:
    """One step computing the single output, laid out as ``perm`` (Keras's layout by default)."""
    perm = perm if perm is not None else layout.identity(len(call.output_shapes[0]))
    return Converted([Step(expr, comment)], [call.output_spec(perm)], notes=notes or [])


def keep_dims(perm: tuple[int, ...], removed: set[int]) -> tuple[int, ...]:
    """The layout left when Keras axes ``removed`` disappear (a reduction, an integer index)."""
    kept = [axis for axis in perm if axis not in removed]
    order = sorted(kept)
    return tuple(order.index(axis) for axis in kept)


def axes_of(call: LayerCall, axis, rank: int) -> list[int] | None:
    """Keras ``axis`` (an int, a sequence or None for all) as sorted non-negative axes."""
    if axis is None:
        return None
    axes = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    normalised = sorted({int(a) % rank for a in axes}) if rank else []
    if any(not -rank <= int(a) < rank for a in axes):
        raise call.unsupported(f"axis {axis} out of range for a rank-{rank} tensor")
    return normalised


def parenthesised(term: str) -> str:
    """A term safe as an operator's operand: a negative literal gets parentheses (``(-1.0)``).

    Every other term the converters build is a name, a literal, a call or an indexing: atoms.
    """
    return f"({term})" if term.startswith("-") else term


# -- NumPy broadcasting across layouts --------------------------------------------------------------
def broadcast(call: LayerCall, values: list) -> tuple[list[str], tuple[int, ...]]:
    """Operands of an element-wise op, each laid out to broadcast as NumPy does in Keras.

    ``values`` are the op's arguments (symbolic tensors or constants). The output keeps the
    layout most full-rank tensor inputs already have; a lower-rank operand gets unit axes where
    NumPy prepends them (``(C,)`` against a channels-first ``(N, H, W, C)`` tensor reads
    ``b[:, None, None]``); constant arrays are re-laid in numpy instead.
    """
    rank = len(call.output_shapes[0])
    tensors = [call.inputs[i] for i in _tensor_indices(call, values)]
    full = [spec for spec in tensors if spec.rank == rank]
    perm = common_perm(full) if full else layout.identity(rank)
    # A constant array may drop its leading unit axes (torch prepends them) when a tensor gives
    # the result its rank.
    floor = 0 if full else rank
    return [_broadcast_term(call, value, perm, floor) for value in values], perm


def _tensor_indices(call: LayerCall, values: list) -> list[int]:
    indices = (tensor_index(call, value) for value in values)
    return [index for index in indices if index is not None]


def _broadcast_term(call: LayerCall, value, perm: tuple[int, ...], floor: int) -> str:
    import keras

    index = tensor_index(call, value)
    if index is not None:
        spec = call.inputs[index]
        return _unit_axes(call.input_as, index, spec.rank, perm)
    if isinstance(value, keras.Variable):  # a weight: re-laid in the generated code
        source = call.operand(value)
        return _unit_axes(lambda _, order: _permuted(source, order), None, len(value.shape), perm)
    if hasattr(value, "shape") and not isinstance(value, (np.generic, int, float)):
        array = np.asarray(keras.ops.convert_to_numpy(value))
        if array.ndim > len(perm):
            raise call.unsupported(f"a constant of rank {array.ndim} broadcast to rank {len(perm)}")
        array = np.transpose(array.reshape((1,) * (len(perm) - array.ndim) + array.shape), perm)
        while array.ndim > floor and array.shape[0] == 1:  # torch prepends unit axes itself
            array = array[0]
        return call.operand(array.item() if array.ndim == 0 else array)  # a number: a literal
    return call.operand(value)


def _permuted(source: str, order: tuple[int, ...]) -> str:
    return layout.permute_expression(source, layout.identity(len(order)), order) or source


def _unit_axes(lay, index, rank: int, perm: tuple[int, ...]) -> str:
    """A rank-``rank`` operand laid out to broadcast against an output laid out as ``perm``.

    NumPy aligns trailing axes: operand axis ``a`` is output axis ``a + missing``. ``lay(index,
    order)`` re-lays the operand; ``None`` indexing adds the unit axes it lacks in the middle.
    """
    missing = len(perm) - rank
    order = tuple(axis - missing for axis in perm if axis >= missing)
    parts = [":" if axis >= missing else "None" for axis in perm]
    while parts and parts[-1] == ":":
        parts.pop()
    while parts and parts[0] == "None":  # torch prepends leading unit axes itself
        parts.pop(0)
    expr = lay(index, order)
    return f"{expr}[{', '.join(parts)}]" if parts else expr
