"""keras.ops shape operations: reshape, transpose, expand/squeeze, concatenate, stack, split, tile,
repeat, broadcast_to, indexing (``x[:, 2:-2]``, ``take``), pad, flip, roll.

Operations that only select or rearrange along named axes (squeeze, split, concatenate, flip,
slicing without ``None``...) run in their input's layout, the Keras axes mapped to torch dims;
those whose meaning depends on the memory order (reshape, stack, einsum-like re-indexing) bring
their input to Keras's layout first. torch slicing has no negative steps: ``x[::-1]`` becomes
``x.flip(dim)`` (then a positive-step slice where the size is known).
"""

from __future__ import annotations

import numpy as np

from .. import layout
from ..registry import Converted, LayerCall, Step, converter
from ._common import common_perm
from ._source import int_or_tuple
from .ops_common import (
    arguments,
    axes_of,
    keep_dims,
    keras_layout,
    result,
    tensor_index,
    torch_dtype,
    value_in_keras_layout,
)


def _shape_source(shape) -> str:
    dims = [-1 if d is None else int(d) for d in shape]
    return ", ".join(str(d) for d in dims)


@converter("Reshape", operation=True)
def convert_reshape(call: LayerCall) -> Converted:
    shape = list(call.layer.newshape)
    # ops.reshape(x, (ops.shape(x)[0], -1, 4)) records the batch size as None: the input's own
    # batch (every tensor of the graph shares it), so the -1 stays the one unknown size.
    batch = shape[:1] == [None] and call.inputs[0].keras_shape[0] is None
    rest = shape[1:] if batch else shape
    if rest.count(None) + rest.count(-1) > 1:
        raise call.unsupported(f"reshape to {tuple(shape)}: more than one unknown size")
    comment = "in Keras's (channels-last) order" if not layout.is_identity(call.inputs[0].perm) else None
    target = ("{x}.shape[0], " if batch else "") + _shape_source(rest)
    return result(call, f"{keras_layout(call, 0)}.reshape({target})", comment=comment)


def _permutation(call: LayerCall, order: tuple[int, ...]) -> Converted:
    """Output axis i is input axis ``order[i]``: one permute from the input's own layout."""
    expr = call.input_as(0, tuple(order))
    if expr == "{x}":
        return Converted([], [call.output_spec(layout.identity(len(order)))])
    return result(call, expr)


@converter("Transpose", operation=True)
def convert_transpose(call: LayerCall) -> Converted:
    rank = call.inputs[0].rank
    axes = call.layer.axes
    order = tuple(reversed(range(rank))) if axes is None else tuple(int(a) % rank for a in axes)
    return _permutation(call, order)


@converter("Swapaxes", operation=True)
def convert_swapaxes(call: LayerCall) -> Converted:
    rank = call.inputs[0].rank
    order = list(range(rank))
    first, second = int(call.layer.axis1) % rank, int(call.layer.axis2) % rank
    order[first], order[second] = order[second], order[first]
    return _permutation(call, tuple(order))


@converter("Moveaxis", operation=True)
def convert_moveaxis(call: LayerCall) -> Converted:
    rank = call.inputs[0].rank
    sources, destinations = (
        [int(a) % rank for a in (value if isinstance(value, (list, tuple)) else [value])]
        for value in (call.layer.source, call.layer.destination)
    )
    order = [axis for axis in range(rank) if axis not in sources]
    for destination, source in sorted(zip(destinations, sources)):  # NumPy's moveaxis
        order.insert(destination, source)
    return _permutation(call, tuple(order))


@converter("ExpandDims", operation=True)
def convert_expand_dims(call: LayerCall) -> Converted:
    rank = len(call.output_shapes[0])
    new = axes_of(call, call.layer.axis, rank)
    source = keras_layout(call, 0)
    if len(new) == 1:
        return result(call, f"{source}.unsqueeze({new[0]})")
    parts = ["None" if axis in new else ":" for axis in range(rank)]
    while parts[-1] == ":":
        parts.pop()
    return result(call, f"{source}[{', '.join(parts)}]")


@converter("Squeeze", operation=True)
def convert_squeeze(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    if call.layer.axis is None:
        axes = [a for a, size in enumerate(spec.keras_shape) if size == 1]
    else:
        axes = axes_of(call, call.layer.axis, spec.rank)
    if not axes:
        return Converted([], [call.output_spec(spec.perm)])
    dims = sorted(spec.torch_dim(a) for a in axes)
    return result(call, f"{{x}}.squeeze({int_or_tuple(dims)})", keep_dims(spec.perm, set(axes)))


def _sequence(call: LayerCall) -> list:
    """The tensors of ``ops.concatenate([a, b])``/``ops.stack(...)``: the first argument."""
    return list(next(iter(arguments(call).values())))


def _tensors(call: LayerCall, values, what: str) -> list[int]:
    indices = [tensor_index(call, value) for value in values]
    if None in indices:
        raise call.unsupported(f"{what} of a constant with tensors")
    return indices


@converter("Concatenate", passthrough=True, operation=True)
def convert_concatenate(call: LayerCall) -> Converted:
    indices = _tensors(call, _sequence(call), "concatenate")
    perm = common_perm([call.inputs[i] for i in indices])
    rank = len(perm)
    axis = int(call.layer.axis) % rank
    terms = [call.input_as(i, perm) for i in indices]
    dim = perm.index(axis)
    comment = f"Keras axis {axis} is torch dim {dim} here ({layout.describe(perm)})" if dim != axis else None
    return result(call, f"torch.cat([{', '.join(terms)}], dim={dim})", perm, comment)


@converter("Stack", passthrough=True, operation=True)
def convert_stack(call: LayerCall) -> Converted:
    indices = _tensors(call, _sequence(call), "stack")
    rank = len(call.output_shapes[0])
    axis = int(call.layer.axis) % rank
    specs = [call.inputs[i] for i in indices]
    if axis == rank - 1 and rank >= 3 and call.input_format == "channels_first":
        # Stacking channels (RGB -> BGR in preprocess_input): stack them at torch dim 1, so the
        # result is channels-first like the convolutions that read it.
        perm = specs[0].perm if len({spec.perm for spec in specs}) == 1 else layout.identity(rank - 1)
        terms = [call.input_as(i, perm) for i in indices]
        out_perm = (perm[0], axis, *perm[1:])
        return result(call, f"torch.stack([{', '.join(terms)}], dim=1)", out_perm)
    terms = [keras_layout(call, i) for i in indices]
    return result(call, f"torch.stack([{', '.join(terms)}], dim={axis})")


@converter("Split", operation=True)
def convert_split(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    axis = int(call.layer.axis) % spec.rank
    dim = spec.torch_dim(axis)
    outputs = [call.output_spec(spec.perm, i) for i in range(len(call.node.outputs))]
    if len(outputs) == 1:
        return Converted([], outputs)
    sections = call.layer.indices_or_sections
    size = spec.keras_shape[axis]
    if isinstance(sections, (int, np.integer)) and size is not None:
        expr = f"torch.split({{x}}, {size // int(sections)}, dim={dim})"  # Keras: equal parts
    else:  # tensor_split takes NumPy's split points (or a number of equal parts)
        expr = f"torch.tensor_split({{x}}, {call.operand(_ints(sections))}, dim={dim})"
    return Converted([Step(expr)], outputs)


def _ints(value):
    if isinstance(value, (int, np.integer)):
        return int(value)
    return [int(v) for v in value]


@converter("Tile", operation=True)
def convert_tile(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    repeats = _ints(call.layer.repeats)
    repeats = [repeats] if isinstance(repeats, int) else repeats
    if len(repeats) == spec.rank:  # tile in the input's layout, the repeats re-ordered
        order = [repeats[axis] for axis in spec.perm]
        return result(call, f"{{x}}.tile({tuple(order)})", spec.perm)
    return result(call, f"{keras_layout(call, 0)}.tile({tuple(repeats)})")  # NumPy's rank rules


@converter("Repeat", operation=True)
def convert_repeat(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    repeats = call.layer.repeats
    if not isinstance(repeats, (int, np.integer)):
        if len(repeats) != 1:
            raise call.unsupported("keras.ops.repeat with a repeat count per element")
        repeats = repeats[0]
    if call.layer.axis is None:  # NumPy flattens first (in Keras's order)
        return result(call, f"{keras_layout(call, 0)}.flatten().repeat_interleave({int(repeats)})")
    dim = spec.torch_dim(int(call.layer.axis))
    return result(call, f"{{x}}.repeat_interleave({int(repeats)}, dim={dim})", spec.perm)


@converter("BroadcastTo", operation=True)
def convert_broadcast_to(call: LayerCall) -> Converted:
    shape = tuple(call.layer.shape)
    spec = call.inputs[0]
    # An unknown target size (ops.shape(x)[0] of another tensor) becomes -1, which keeps the
    # input's size: right only where the input's own size is unknown too (the same batch).
    # A new leading axis has no size of its own to keep: unknown there is unknown for good.
    sizes = (0,) * (len(shape) - spec.rank) + tuple(spec.keras_shape)
    if any(target is None and size is not None for target, size in zip(shape, sizes)):
        raise call.unsupported(
            f"broadcast_to {shape} of a {tuple(spec.keras_shape)} tensor: a size known only when the "
            "model runs (another tensor's batch size); tile or broadcast against that tensor instead"
        )
    return result(call, f"{keras_layout(call, 0)}.expand({_shape_source(shape)})")


@converter("Flip", passthrough=True, operation=True)
def convert_flip(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    axes = axes_of(call, call.layer.axis, spec.rank)
    axes = list(range(spec.rank)) if axes is None else axes
    dims = tuple(sorted(spec.torch_dim(a) for a in axes))
    return result(call, f"torch.flip({{x}}, dims={dims})", spec.perm)


@converter("Roll", operation=True)
def convert_roll(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    shift = _ints(call.layer.shift)
    if call.layer.axis is None:  # NumPy rolls the flattened array (in Keras's order)
        return result(call, f"torch.roll({keras_layout(call, 0)}, {shift})")
    axes = [call.layer.axis] if isinstance(call.layer.axis, (int, np.integer)) else call.layer.axis
    dims = tuple(spec.torch_dim(int(a)) for a in axes)
    shifts = shift if isinstance(shift, int) else tuple(shift)
    return result(call, f"torch.roll({{x}}, {shifts}, dims={dims if len(dims) > 1 else dims[0]})", spec.perm)


@converter("Ravel", operation=True)
def convert_ravel(call: LayerCall) -> Converted:
    return result(call, f"{keras_layout(call, 0)}.flatten()", comment="NumPy's ravel: every axis, batch too")


# -- indexing -------------------------------------------------------------------------------------
@converter("GetItem", passthrough=True, operation=True)
def convert_get_item(call: LayerCall) -> Converted:
    """``x[1:-1, ::-1, None, ...]``: the same indexing, negative steps as flips."""
    args = arguments(call)
    key = args["key"]
    key = list(key) if isinstance(key, tuple) else [key]
    spec = call.inputs[0]
    if any(tensor_index(call, k) is not None or hasattr(k, "shape") for k in key):
        raise call.unsupported("indexing with a tensor or an array (use keras.ops.take)")
    if key.count(Ellipsis) > 1:
        raise call.unsupported("an index with more than one Ellipsis")
    explicit = sum(1 for k in key if k is not None and k is not Ellipsis)
    if explicit > spec.rank:
        raise call.unsupported(f"index {args['key']!r} has more entries than the tensor has axes")
    fill = [slice(None)] * (spec.rank - explicit)
    if Ellipsis in key:
        position = key.index(Ellipsis)
        key[position : position + 1] = fill
    else:
        key += fill
    per_axis = [k for k in key if k is not None]  # one entry per input axis, in Keras order
    if any(not isinstance(k, (slice, int, np.integer)) for k in per_axis):
        raise call.unsupported(f"index {args['key']!r}")
    if None in key:  # new axes: index in Keras's layout
        perm, source, items = layout.identity(spec.rank), keras_layout(call, 0), key
    else:  # index in the input's own layout
        perm, source = spec.perm, "{x}"
        items = [per_axis[axis] for axis in spec.perm]
    flips, parts = [], []
    torch_dim = 0
    for item in items:
        if item is None:
            parts.append("None")
            continue
        axis = perm[torch_dim]
        text, flipped = _index_text(call, item, spec.keras_shape[axis])
        if flipped:
            flips.append(torch_dim)
        parts.append(text)
        torch_dim += 1
    if flips:
        source = f"{source}.flip({int_or_tuple(flips)})"
    while parts and parts[-1] == ":":
        parts.pop()
    expr = f"{source}[{', '.join(parts)}]" if parts else source
    integers = {axis for axis, k in enumerate(per_axis) if isinstance(k, (int, np.integer))}
    out_perm = keep_dims(perm, integers) if None not in key else layout.identity(len(call.output_shapes[0]))
    if expr == "{x}":
        return Converted([], [call.output_spec(out_perm)])
    comment = "torch slices have no negative step: flip, then slice" if flips else None
    return result(call, expr, out_perm, comment)


def _index_text(call: LayerCall, item, size) -> tuple[str, bool]:
    """Source of one axis's index, and whether the axis is flipped first (negative step)."""
    if not isinstance(item, slice):
        return str(int(item)), False
    start, stop, step = item.start, item.stop, 1 if item.step is None else int(item.step)
    if step > 0:
        return _slice_text(start, stop, step), False
    if step == 0:
        raise call.unsupported("a slice with step 0")
    if start is None and stop is None:  # x[::-k]: every k-th element from the end
        return _slice_text(None, None, -step), True
    if size is None:
        raise call.unsupported(f"slice {item} with a negative step on an axis of unknown size")
    # Element i of the axis is element size - 1 - i of the flipped axis.
    first, last, _ = item.indices(size)
    return _slice_text(size - 1 - first, size - 1 - last, -step, size), True


def _slice_text(start, stop, step: int, size=None) -> str:
    start = None if start in (0, None) else int(start)
    stop = None if stop is None or (size is not None and stop >= size) else int(stop)
    text = f"{'' if start is None else start}:{'' if stop is None else stop}"
    return text + (f":{step}" if step != 1 else "")


def _take_operands(call: LayerCall) -> tuple[str, str, int | None]:
    """``x`` and ``indices`` of a take call, both in Keras's layout, and the axis made
    non-negative (None: over the flattened ``x``)."""
    args = arguments(call)
    source = value_in_keras_layout(call, args["x"])
    indices = value_in_keras_layout(call, args["indices"])
    axis = None if call.layer.axis is None else int(call.layer.axis) % len(args["x"].shape)
    return source, indices, axis


@converter("Take", operation=True)
def convert_take(call: LayerCall) -> Converted:
    """``ops.take(x, indices, axis)``: advanced indexing along the axis (``w[ids]`` for axis 0)."""
    source, indices, axis = _take_operands(call)
    if axis is None:
        return result(call, f"{source}.flatten()[{indices}]", comment="NumPy's take flattens first")
    return result(call, f"{source}[{', '.join([':'] * axis + [indices])}]")


@converter("TakeAlongAxis", operation=True)
def convert_take_along_axis(call: LayerCall) -> Converted:
    source, indices, axis = _take_operands(call)
    if axis is None:
        return result(call, f"torch.take_along_dim({source}, {indices}.long())")
    return result(call, f"torch.take_along_dim({source}, {indices}.long(), dim={axis})")


# -- padding --------------------------------------------------------------------------------------
# NumPy pad modes with an exact torch twin that the TensorFlow backend also runs (it has no
# "edge"/"wrap"; torch has no "symmetric").
_PAD_MODES = {"constant": "constant", "reflect": "reflect"}


@converter("Pad", operation=True)
def convert_pad(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    mode = call.layer.mode
    if mode not in _PAD_MODES:
        raise call.unsupported(f"pad mode {mode!r} has no torch equivalent")
    widths = np.broadcast_to(np.asarray(call.layer.pad_width, dtype=int), (spec.rank, 2))
    pairs = [tuple(int(w) for w in widths[axis]) for axis in spec.perm]  # in torch dim order
    while pairs and pairs[0] == (0, 0):
        pairs.pop(0)
    flat = [w for pair in reversed(pairs) for w in pair]  # F.pad starts from the last dim
    if not flat:
        return Converted([], [call.output_spec(spec.perm)])
    options = ""
    if mode != "constant":
        if len(pairs) > 3 or len(pairs) >= spec.rank:
            raise call.unsupported(f"pad mode {mode!r} on more than the last three non-batch axes")
        options = f', mode="{_PAD_MODES[mode]}"'
    else:
        value = arguments(call).get("constant_values")
        if value is not None and float(value) != 0.0:
            options = f", value={call.operand(value)}"
    return result(call, f"F.pad({{x}}, {tuple(flat)}{options})", spec.perm)


# -- new tensors shaped like an input, slices, triangles --------------------------------------------
@converter("ZerosLike", "OnesLike", "FullLike", "Copy", "ConvertToTensor", passthrough=True, operation=True)
def convert_like(call: LayerCall) -> Converted:
    """``zeros_like``/``ones_like``/``full_like`` (in the input's layout), ``copy``, ``convert_to_tensor``."""
    spec = call.inputs[0]
    out = call.node.outputs[0].dtype
    dtype = f", dtype={torch_dtype(call, out)}" if out != spec.dtype else ""
    if out != spec.dtype and call.class_name in ("Copy", "ConvertToTensor"):
        return result(call, f"{{x}}.to({torch_dtype(call, out)})", spec.perm)
    if call.class_name == "ConvertToTensor":  # already a tensor
        return Converted([], [call.output_spec(spec.perm)])
    if call.class_name == "Copy":
        return result(call, "{x}.clone()", spec.perm)
    if call.class_name == "FullLike":
        fill = arguments(call)["fill_value"]
        if tensor_index(call, fill) is not None or hasattr(fill, "shape"):
            raise call.unsupported("full_like with a tensor fill value")
        return result(call, f"torch.full_like({{x}}, {call.operand(fill)}{dtype})", spec.perm)
    function = "torch.zeros_like" if call.class_name == "ZerosLike" else "torch.ones_like"
    return result(call, f"{function}({{x}}{dtype})", spec.perm)


@converter("Slice", operation=True)
def convert_slice(call: LayerCall) -> Converted:
    """``keras.ops.slice(x, start_indices, shape)`` with constant starts: plain slicing."""
    spec = call.inputs[0]
    starts = arguments(call)["start_indices"]
    if tensor_index(call, starts) is not None:
        raise call.unsupported("keras.ops.slice with start indices computed in the model")
    starts = [int(s) for s in np.asarray(keras_numpy(starts)).reshape(-1)]
    shape = list(call.layer.shape)
    parts = []
    for axis in spec.perm:
        start, size = starts[axis], shape[axis]
        stop = "" if size is None or size == -1 else start + int(size)
        parts.append(f"{start or ''}:{stop}")
    while parts and parts[-1] == ":":
        parts.pop()
    if not parts:
        return Converted([], [call.output_spec(spec.perm)])
    return result(call, f"{{x}}[{', '.join(parts)}]", spec.perm)


def keras_numpy(value):
    import keras

    return keras.ops.convert_to_numpy(value) if hasattr(value, "shape") else value


@converter("Unstack", operation=True)
def convert_unstack(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    axis = int(call.layer.axis) % spec.rank
    perm = keep_dims(spec.perm, {axis})
    outputs = [call.output_spec(perm, i) for i in range(len(call.node.outputs))]
    return Converted([Step(f"torch.unbind({{x}}, dim={spec.torch_dim(axis)})")], outputs)


@converter("Tril", "Triu", operation=True)
def convert_triangle(call: LayerCall) -> Converted:
    """Lower/upper triangle of the last two Keras axes (read in Keras's layout)."""
    k = int(call.layer.k)
    function = f"torch.{call.class_name.lower()}"
    return result(call, f"{function}({keras_layout(call, 0)}{f', diagonal={k}' if k else ''})")
