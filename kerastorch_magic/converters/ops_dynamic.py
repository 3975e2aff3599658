"""Ops over sizes known only when the model runs: ``ops.arange(ops.shape(x)[1])`` on an input of
length None, and the reshape/tile of a causal mask built from it.

Tracing records them as sized operations (:mod:`kerastorch_magic.tracing.sizes`): each reads
the tensors whose runtime sizes it uses as inputs, and a size is a :class:`SizeOf` (input, Keras
axis), written ``x.shape[d]`` with ``d`` that axis's torch dim. The port then works at every
length, as the Keras model does.
"""

from __future__ import annotations

from .. import layout
from ..registry import Converted, LayerCall, converter
from ..tracing.pseudo import SizeOf
from .ops_common import keras_layout, result, torch_dtype


def _placeholder(call: LayerCall, index: int) -> str:
    return "{x}" if len(call.inputs) == 1 else "{x" + str(index) + "}"


def _size(call: LayerCall, entry) -> str:
    """An entry of a shape as source: an int, or ``x.shape[d]`` of the tensor it was read from."""
    if not isinstance(entry, SizeOf):
        return repr(int(entry))
    return f"{_placeholder(call, entry.input)}.shape[{call.inputs[entry.input].torch_dim(entry.axis)}]"


@converter("DynamicArange", operation=True)
def convert_arange(call: LayerCall) -> Converted:
    operation = call.layer
    start, step = operation.start, operation.step
    parts = [_size(call, operation.stop)]
    if start != 0 or step != 1:
        parts = [repr(start), *parts, *([repr(step)] if step != 1 else [])]
    comment = None
    if operation.dtype == "int32":
        # Only the values can differ in kind: int64 holds them, and it is what indexing takes.
        comment = "int64 in torch, int32 in Keras: the same positions"
    elif operation.dtype != "int64":
        parts.append(f"dtype={torch_dtype(call, operation.dtype)}")
    device = _placeholder(call, operation.stop.input)
    parts.append(f"device={device}.device")
    return result(call, f"torch.arange({', '.join(parts)})", comment=comment)


@converter("DynamicReshape", operation=True)
def convert_reshape(call: LayerCall) -> Converted:
    target = ", ".join(_size(call, entry) for entry in call.layer.target)
    comment = "in Keras's (channels-last) order" if not layout.is_identity(call.inputs[0].perm) else None
    return result(call, f"{keras_layout(call, 0)}.reshape({target})", comment=comment)


@converter("DynamicTile", operation=True)
def convert_tile(call: LayerCall) -> Converted:
    # The repeats were padded to the output's rank when traced (NumPy's rule), so Tensor.repeat
    # reads them as ops.tile does.
    repeats = ", ".join(_size(call, entry) for entry in call.layer.repeats)
    comment = "Keras's ops.tile is Tensor.repeat (torch's repeat_interleave is ops.repeat)"
    return result(call, f"{keras_layout(call, 0)}.repeat({repeats})", comment=comment)
