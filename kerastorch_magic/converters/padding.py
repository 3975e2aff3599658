"""TensorFlow's padding arithmetic, shared by convolutions and pooling (DESIGN.md §5.1-2).

TF's ``padding="same"`` makes ``out = ceil(in / stride)`` and pads
``total = max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)``, ``total // 2`` before and the
odd pixel after (bottom/right). At stride 1 that is ``(k - 1) * dilation`` whatever the input size;
at stride > 1 it depends on the size: static shapes give constants, unknown ones a small generated
helper (:data:`SAME_PAD_HELPER`) that computes the pads at run time.
"""

from __future__ import annotations

from ..registry import Fragment, LayerCall, Step
from ._source import compact

# Leading underscore: layer-derived identifiers never start with one (naming.identifier strips it),
# so no forward variable can shadow the helper. No "#" in its source: codegen strips comments from
# the rendered body line by line to find the imports used, and a helper is one multi-line entry.
SAME_PAD_NAME = "_pad_same"
SAME_PAD_HELPER = '''
def _pad_same(x, kernel_size, stride, dilation=None, value=0.0):
    """TF's padding="same" for (N, C, *spatial) x: out = ceil(in / stride), odd pixel after.

    F.pad takes (before, after) pairs from the last dimension back.
    """
    dilation = dilation or (1,) * len(kernel_size)
    pad = []
    for size, k, s, d in zip(x.shape[2:], kernel_size, stride, dilation):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pad = [total // 2, total - total // 2, *pad]
    return F.pad(x, pad, value=value)
'''.strip()


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


def spatial_padding(
    call: LayerCall, kernel, strides, dilation, allow_dynamic: bool = False
) -> list[tuple[int, int]] | None:
    """Per spatial dimension (before, after) for the layer's ``padding`` option.

    With 'valid', the zeros of a ZeroPadding layer folded into this one (:mod:`..zero_padding`).

    'same' at stride > 1 over a dimension of unknown size has no constant answer: an error naming
    the layer, or None with ``allow_dynamic`` (the caller then pads with :func:`same_pad`).
    """
    mode = call.config.get("padding", "valid")
    mode = mode.lower() if isinstance(mode, str) else mode
    rank = len(kernel)
    if mode == "valid":
        folded = getattr(call.node, "zero_padding", None)  # a ZeroPadding layer folded in
        return [(p, p) for p in folded] if folded else [(0, 0)] * rank
    if mode == "causal":
        return [((kernel[0] - 1) * dilation[0], 0)]
    if mode != "same":
        raise call.unsupported(f"padding={mode!r}")
    sizes = spatial_sizes(call)
    pads = []
    for size, k, s, d in zip(sizes, kernel, strides, dilation):
        pad = same_padding(size, k, s, d)
        if pad is None:
            if allow_dynamic:
                return None
            raise call.unsupported(
                "padding='same' with stride > 1 depends on the input size, which this model leaves "
                "unspecified; give the Keras Input a fixed spatial shape"
            )
        pads.append(pad)
    return pads


def same_pad(kernel, strides, dilation=None, value: str | None = None) -> Fragment:
    """The run-time 'same' padding step for inputs of unknown size, with the helper it calls.

    ``value`` is the pad value's source text (``'float("-inf")'`` for max pooling).
    """
    args = [f"kernel_size={tuple(kernel)}", f"stride={tuple(strides)}"]
    if dilation is not None and any(d != 1 for d in dilation):
        args.append(f"dilation={tuple(dilation)}")
    if value is not None:
        args.append(f"value={value}")
    step = Step(
        f"{SAME_PAD_NAME}({{x}}, {', '.join(args)})",
        f"TF 'same' padding at stride {compact(tuple(strides))} depends on the input size, known only "
        "at run time here (odd pixel after, unlike torch's symmetric padding).",
    )
    return Fragment([step], helpers={SAME_PAD_NAME: SAME_PAD_HELPER})


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


def size_text(sizes) -> str:
    """``9x9`` for spatial sizes (9, 9), for comments."""
    return "x".join("?" if s is None else str(s) for s in sizes)
