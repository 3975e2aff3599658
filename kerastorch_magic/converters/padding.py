"""TensorFlow's padding arithmetic, shared by convolutions and pooling (DESIGN.md §5.1-2)."""

from __future__ import annotations

from ..registry import LayerCall


def tuple_of(value, rank: int) -> tuple[int, ...]:
    """Keras's int-or-tuple arguments as a tuple of ``rank`` ints."""
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return (int(value),) * rank


def same_padding(size: int | None, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int] | None:
    """(before, after) padding TF's "same" applies to one dimension; None if it needs ``size``.

    TF makes ``out = ceil(size / stride)`` and pads ``max((out-1)*stride + (k-1)*d + 1 - size, 0)``,
    the odd pixel going after (bottom/right).
    """
    span = (kernel - 1) * dilation + 1
    if stride == 1:
        total = span - 1
    elif size is None:
        return None
    else:
        out = -(-size // stride)
        total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2


def spatial_padding(call: LayerCall, kernel, strides, dilation) -> list[tuple[int, int]]:
    """Per spatial dimension (before, after) for the layer's ``padding`` option."""
    mode = call.config.get("padding", "valid")
    rank = len(kernel)
    if mode == "valid":
        return [(0, 0)] * rank
    if mode == "causal":
        return [((kernel[0] - 1) * dilation[0], 0)]
    if mode != "same":
        raise call.unsupported(f"padding={mode!r}")
    sizes = spatial_sizes(call)
    pads = []
    for size, k, s, d in zip(sizes, kernel, strides, dilation):
        pad = same_padding(size, k, s, d)
        if pad is None:
            raise call.unsupported(
                "padding='same' with stride > 1 depends on the input size, which this model leaves "
                "unspecified; give the Keras Input a fixed spatial shape"
            )
        pads.append(pad)
    return pads


def spatial_sizes(call: LayerCall) -> tuple:
    """The input's spatial sizes in Keras order (None where unknown)."""
    shape = call.inputs[0].keras_shape
    if call.config.get("data_format", "channels_last") == "channels_first":
        return tuple(shape[2:])
    return tuple(shape[1:-1])


def torch_pad_tuple(pads: list[tuple[int, int]]) -> tuple[int, ...]:
    """F.pad's argument: last dimension first, (before, after) each."""
    flat: list[int] = []
    for before, after in reversed(pads):
        flat += [before, after]
    return tuple(flat)


def compact(values: tuple[int, ...]) -> str:
    """``3`` for (3, 3), ``(1, 2)`` otherwise: the form a person would write."""
    if len(set(values)) == 1:
        return str(values[0])
    return "(" + ", ".join(str(v) for v in values) + ")"
