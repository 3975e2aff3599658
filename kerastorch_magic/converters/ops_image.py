"""keras.ops image, convolution and pooling operations: image.resize, image.extract_patches,
depth_to_space/space_to_depth, conv, max_pool/average_pool.

They compute channels-first in torch (their input is re-laid once, a model input feeding them is
taken channels-first). TensorFlow's "same" padding puts the odd pixel after; where torch's
``padding=`` cannot say that, the generated code pads explicitly.
"""

from __future__ import annotations

from .. import layout
from ..registry import Converted, LayerCall, converter
from .ops_common import arguments, keras_layout, result, value_in_keras_layout

_RESIZE_MODES = {"bilinear": "bilinear", "nearest": "nearest-exact", "bicubic": "bicubic"}


@converter("Resize", channels_first=True, operation=True)
def convert_resize(call: LayerCall) -> Converted:
    """``keras.ops.image.resize``: ``F.interpolate`` on the channels-first tensor.

    TensorFlow samples at pixel centres (half-pixel), like torch's ``align_corners=False`` and
    ``nearest-exact``; its antialiased bilinear and bicubic filters are torch's ``antialias=True``
    ones (measured equal to float32 round-off). Plain bicubic is refused: Keys' a=-0.5 in
    TensorFlow, -0.75 in torch.
    """
    layer = call.layer
    spec = call.inputs[0]
    if spec.rank != 4:
        raise call.unsupported("image.resize of an unbatched image")
    if layer.interpolation not in _RESIZE_MODES:
        raise call.unsupported(f"image.resize interpolation={layer.interpolation!r}")
    if layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio:
        raise call.unsupported("image.resize with crop_to_aspect_ratio or pad_to_aspect_ratio")
    perm = _image_perm(call)
    size = tuple(int(d) for d in layer.size)
    before = [spec.keras_shape[axis] for axis in perm[2:]]
    shrinks = any(old is None or new < old for old, new in zip(before, size))
    mode = _RESIZE_MODES[layer.interpolation]
    options = ""
    if mode == "nearest-exact" and layer.antialias:
        raise call.unsupported("image.resize interpolation='nearest' with antialias=True")
    if mode == "bicubic" and not layer.antialias:
        raise call.unsupported("image.resize bicubic without antialias (Keys a=-0.5, torch's -0.75)")
    if mode != "nearest-exact":
        # Enlarging, bilinear is the same with or without antialias; bicubic is not (its a).
        antialias = layer.antialias and (shrinks or mode == "bicubic")
        options = ", align_corners=False" + (", antialias=True" if antialias else "")
    expr = f'F.interpolate({call.input_as(0, perm)}, size={size}, mode="{mode}"{options})'
    return result(call, expr, perm)


def _image_perm(call: LayerCall, rank: int = 4) -> tuple[int, ...]:
    """The channels-first torch layout of an image op's input (for its ``data_format``)."""
    data_format = getattr(call.layer, "data_format", None) or "channels_last"
    return layout.channels_first(rank) if data_format == "channels_last" else layout.identity(rank)


@converter("ExtractPatches", channels_first=True, operation=True)
def convert_extract_patches(call: LayerCall) -> Converted:
    """``keras.ops.image.extract_patches``: ``F.unfold``, each patch re-ordered as Keras's.

    Keras (like TensorFlow's ``extract_patches``) orders a patch's values (row, column, channel);
    ``F.unfold`` gives (channel, row, column).
    """
    layer = call.layer
    spec = call.inputs[0]
    size = (layer.size, layer.size) if isinstance(layer.size, int) else tuple(layer.size)
    if spec.rank != 4 or len(size) != 2:
        raise call.unsupported("extract_patches of anything but a batch of 2D images")
    strides = layer.strides or size
    strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
    dilation = layer.dilation_rate
    dilation = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    perm = _image_perm(call)
    keras_channels = 3 if perm == layout.channels_first(4) else 1
    channels = spec.keras_shape[keras_channels]
    out_shape = call.output_shapes[0]
    rows, cols = (out_shape[a] for a in ((1, 2) if keras_channels == 3 else (2, 3)))
    source = call.input_as(0, perm)
    if layer.padding.lower() == "same":
        source = _same_padding(call, source, size, strides, dilation, perm)
    options = f"kernel_size={size}, stride={strides}" + (
        f", dilation={dilation}" if dilation != (1, 1) else ""
    )
    area = size[0] * size[1]
    expr = (
        f"F.unfold({source}, {options})"
        f".unflatten(1, ({channels}, {area})).transpose(1, 2).reshape(-1, {area * channels}, {rows}, {cols})"
    )
    comment = "each patch ordered (row, column, channel) as in Keras; F.unfold orders (channel, row, column)"
    return result(call, expr, perm, comment)


def _same_padding(call: LayerCall, source: str, size, strides, dilation, perm, value: str = "") -> str:
    """TensorFlow's "same" padding (the odd pixel after) as an explicit ``F.pad``."""
    pads = _same_pads(call, size, strides, dilation, perm)
    flat = tuple(width for pair in reversed(pads) for width in pair)  # F.pad: last dim first
    return f"F.pad({source}, {flat}{value})" if any(flat) else source


def _same_pads(call: LayerCall, size, strides, dilation, perm) -> list[tuple[int, int]]:
    """(before, after) per spatial axis of TensorFlow's "same" padding."""
    pads = []
    for index, axis in enumerate(perm[2:]):
        length = call.inputs[0].keras_shape[axis]
        if length is None:
            raise call.unsupported("extract_patches padding='same' on images of unknown size")
        span = (size[index] - 1) * dilation[index] + 1
        total = max((-(-length // strides[index]) - 1) * strides[index] + span - length, 0)
        pads.append((total // 2, total - total // 2))
    return pads


@converter("DepthToSpace", "SpaceToDepth", operation=True)
def convert_depth_to_space(call: LayerCall) -> Converted:
    """Keras's (TensorFlow's) depth/space rearrangement, channels ordered (row, column, channel).

    ``F.pixel_shuffle`` orders the channels (channel, row, column) instead, so the generated code
    spells the rearrangement out on Keras's layout.
    """
    block = int(call.layer.block_size)
    if (call.layer.data_format or "channels_last") != "channels_last":
        raise call.unsupported(f"{call.class_name} with data_format='channels_first'")
    _, height, width, channels = call.inputs[0].keras_shape
    if None in (height, width, channels):
        raise call.unsupported(f"{call.class_name} of images of unknown size")
    source = keras_layout(call, 0)
    if call.class_name == "DepthToSpace":
        depth = channels // (block * block)
        expr = (
            f"{source}.reshape(-1, {height}, {width}, {block}, {block}, {depth})"
            f".permute(0, 1, 3, 2, 4, 5).reshape(-1, {height * block}, {width * block}, {depth})"
        )
    else:
        expr = (
            f"{source}.reshape(-1, {height // block}, {block}, {width // block}, {block}, {channels})"
            f".permute(0, 1, 3, 2, 4, 5).reshape(-1, {height // block}, {width // block}, "
            f"{channels * block * block})"
        )
    return result(call, expr, comment="channels ordered (row, column, channel) as in Keras")


def _tuple(value, rank: int) -> tuple[int, ...]:
    return (int(value),) * rank if isinstance(value, int) else tuple(int(v) for v in value)


@converter("Conv", channels_first=True, operation=True)
def convert_conv_op(call: LayerCall) -> Converted:
    """``keras.ops.conv(x, kernel)`` (a custom layer's convolution): ``F.conv1d/2d/3d``.

    The kernel keeps Keras's layout (spatial..., in, out) and is permuted to torch's (out, in,
    spatial...) where it is used, so a ``keras.Variable`` kernel stays the Parameter it was.
    """
    layer = call.layer
    args = arguments(call)
    spec = call.inputs[0]
    spatial = spec.rank - 2
    kernel = args["kernel"]
    perm = _image_perm(call, spec.rank)
    channels = spec.keras_shape[perm[1]]
    kernel_shape = tuple(kernel.shape)
    if channels != kernel_shape[-2]:  # Keras checks it too: no grouped convolutions
        raise call.unsupported(f"conv of {channels} channels with a kernel of shape {kernel_shape}")
    weight = value_in_keras_layout(call, kernel)
    weight = f"{weight}.permute({', '.join(str(d) for d in (spatial + 1, spatial, *range(spatial)))})"
    size = kernel_shape[:spatial]
    strides, dilation = _tuple(layer.strides, spatial), _tuple(layer.dilation_rate, spatial)
    source = call.input_as(0, perm)
    options = []
    if strides != (1,) * spatial:
        options.append(f"stride={strides if spatial > 1 else strides[0]}")
    if layer.padding.lower() == "same":
        if strides == (1,) * spatial:
            options.append('padding="same"')  # the odd pixel after, as TensorFlow pads
        else:
            source = _same_padding(call, source, size, strides, dilation, perm)
    if dilation != (1,) * spatial:
        options.append(f"dilation={dilation if spatial > 1 else dilation[0]}")
    expr = f"F.conv{spatial}d({', '.join([source, weight, *options])})"
    return result(call, expr, perm, "Keras kernels are (spatial..., in, out); torch's (out, in, spatial...)")


@converter("MaxPool", "AveragePool", channels_first=True, operation=True)
def convert_pool_op(call: LayerCall) -> Converted:
    """``keras.ops.max_pool``/``average_pool``: ``F.max_pool*d``/``F.avg_pool*d``.

    TensorFlow's "same" pooling ignores the padded cells: -inf padding for the maximum; for the
    average, torch's symmetric ``padding=`` with ``count_include_pad=False`` when the padding is
    symmetric (refused otherwise).
    """
    layer = call.layer
    spec = call.inputs[0]
    spatial = spec.rank - 2
    perm = _image_perm(call, spec.rank)
    size = _tuple(layer.pool_size, spatial)
    strides = _tuple(layer.strides or layer.pool_size, spatial)
    source = call.input_as(0, perm)
    maximum = call.class_name == "MaxPool"
    options = [str(size if spatial > 1 else size[0])]
    if strides != size:
        options.append(f"stride={strides if spatial > 1 else strides[0]}")
    if layer.padding == "same":
        if maximum:
            source = _same_padding(call, source, size, strides, (1,) * spatial, perm, ", value=-math.inf")
        else:
            pads = _same_pads(call, size, strides, (1,) * spatial, perm)
            if any(before != after for before, after in pads):
                raise call.unsupported("average_pool padding='same' with uneven padding")
            widths = tuple(before for before, _ in pads)
            if any(widths):
                options += [f"padding={widths if spatial > 1 else widths[0]}", "count_include_pad=False"]
    function = f"F.max_pool{spatial}d" if maximum else f"F.avg_pool{spatial}d"
    return result(call, f"{function}({', '.join([source, *options])})", perm)
