"""Convolutions: Conv1D/2D/3D, Conv1D/2D/3DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D.

Kernel layouts, Keras -> torch (``_to_torch`` moves the two channel axes in front, swapped):

* Conv ``(k..., in / groups, out)`` -> ``(out, in / groups, k...)``;
* ConvTranspose ``(k..., out, in)`` -> ``(in, out, k...)`` (the same axis move);
* Depthwise ``(k..., C, M)`` -> ``(C * M, 1, k...)`` with ``groups=C``: reshaping to
  ``(k..., 1, C * M)`` first keeps TF's output channel order ``c * M + m``.

Padding follows TF (see :mod:`.padding`): symmetric pads go into the module's ``padding=``,
asymmetric ones (even kernels, stride > 1, 'causal') into an explicit ``F.pad`` before it.
"""

from __future__ import annotations

import numpy as np

from .. import initializers
from ..registry import Converted, Fragment, LayerCall, Step, Submodule, converter
from ._source import compact
from .activations import activation_steps
from .padding import same_pad, size_text, spatial_padding, spatial_sizes, torch_pad_tuple, tuple_of


def _to_torch(kernel: np.ndarray) -> np.ndarray:
    """Keras ``(k..., a, b)`` -> torch ``(b, a, k...)``."""
    rank = kernel.ndim - 2
    return np.ascontiguousarray(np.transpose(kernel, (rank + 1, rank, *range(rank))))


def _geometry(call: LayerCall, rank: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    config = call.config
    size = tuple_of(config["kernel_size"], rank)
    strides = tuple_of(config.get("strides", 1), rank)
    dilation = tuple_of(config.get("dilation_rate", 1), rank)
    return size, strides, dilation


def _padded_input(call: LayerCall, cf, size, strides, dilation) -> tuple[list[str], Fragment]:
    """The input brought to layout ``cf`` and padded as TF does: ``padding=`` arguments, code."""
    padding_args, pad = _padding(call, size, strides, dilation)
    return padding_args, Fragment(call.relayout(cf)) + pad


def _padding(call: LayerCall, size, strides, dilation) -> tuple[list[str], Fragment]:
    """TF padding as the conv's constructor arguments and the code to run before it."""
    pads = spatial_padding(call, size, strides, dilation, allow_dynamic=True)
    if pads is None:  # 'same' at stride > 1 on an input of unknown size
        return [], same_pad(size, strides, dilation)
    strided = any(s != 1 for s in strides)
    if all(before == after for before, after in pads):
        if not any(before for before, _ in pads):
            return [], Fragment()
        padding = compact(tuple(before for before, _ in pads))
        notes = []
        if strided and call.config.get("padding") == "same":
            notes.append(
                f"Keras padding='same' at stride {compact(strides)} depends on the input size; "
                f"padding={padding} holds for the {size_text(spatial_sizes(call))} input the model was "
                "built for."
            )
        return [f"padding={padding}"], Fragment(notes=notes)
    if call.config.get("padding") == "causal":
        why = "Keras 'causal' padding: pad the start of the sequence only."
    else:
        why = (
            "TF 'same' padding puts the odd pixel after (bottom/right); torch pads evenly, so pad explicitly"
        )
        why += f" (pads for the {size_text(spatial_sizes(call))} input)." if strided else "."
    return [], Fragment([Step(f"F.pad({{x}}, {torch_pad_tuple(pads)})", why)])


def _conv_args(in_channels, out_channels, size, strides, padding_args, dilation, groups=1, bias=True):
    """``nn.ConvNd`` arguments in torch's order, defaults left out."""
    args = [str(in_channels), str(out_channels), f"kernel_size={compact(size)}"]
    if any(s != 1 for s in strides):
        args.append(f"stride={compact(strides)}")
    args += padding_args
    if any(d != 1 for d in dilation):
        args.append(f"dilation={compact(dilation)}")
    if groups != 1:
        args.append(f"groups={groups}")
    if not bias:
        args.append("bias=False")
    return ", ".join(args)


def _bias(call: LayerCall, bias: np.ndarray, state: dict, init: list[str]) -> None:
    """Add the layer's bias to ``state`` and its Keras initialiser to ``init``."""
    state["bias"] = bias
    channels = bias.shape[0]
    init += initializers.init_lines(call.config.get("bias_initializer"), (channels,), (channels,), "bias")


def _finish(call: LayerCall, code: Fragment, expr: str, perm, modules, comment=None) -> Converted:
    """``code``, then the last step (``expr`` under the layer's activation), as the result."""
    code += activation_steps(call, expr, call.config.get("activation"), 1, comment)
    return Converted.from_fragment(code, [call.output_spec(perm)], modules)


@converter("Conv1D", "Conv2D", "Conv3D", channels_first=True)
def convert_conv(call: LayerCall) -> Converted:
    config, layer, weights = call.config, call.layer, call.weights
    kernel = weights["kernel"]  # (k..., in / groups, out)
    notes: list[str] = []
    if getattr(layer, "lora_enabled", False):  # the kernel Keras computes with: base + A @ B scaled
        kernel = np.asarray(layer.kernel, dtype=kernel.dtype)
        notes.append("LoRA adapter merged into the weight (kernel + alpha / rank * A @ B).")
    rank = kernel.ndim - 2
    size, strides, dilation = _geometry(call, rank)
    groups = int(config.get("groups", 1))
    in_channels, out_channels = kernel.shape[-2] * groups, kernel.shape[-1]
    cf = call.channels_first_perm()
    padding_args, code = _padded_input(call, cf, size, strides, dilation)
    use_bias = config.get("use_bias", True)
    args = _conv_args(in_channels, out_channels, size, strides, padding_args, dilation, groups, use_bias)
    weight = _to_torch(kernel)
    state = {"weight": weight}
    init = initializers.init_lines(config.get("kernel_initializer"), kernel.shape, weight.shape, "weight")
    if use_bias:
        _bias(call, weights["bias"], state, init)
    module = Submodule(f"nn.Conv{rank}d({args})", state, init)
    return _finish(call, Fragment(notes=notes) + code, "{m}({x})", cf, {"": module})


def _transpose_geometry(size, strides, dilation, padding, output_padding):
    """Per dimension, torch's (padding, output_padding, crop at the end) reproducing TF.

    TF's transposed conv is the adjoint of a forward conv from its output (size ``out``) to its
    input: output ``o`` is element ``o + before`` of the full result (length ``(in - 1) * stride +
    span``), ``before`` being the forward conv's padding, and zero-plus-bias past its end. torch's
    output ``o`` is element ``o + padding`` of the full result, ``output_padding`` more at the end.
    So ``padding = before``, and the length difference is ``output_padding`` when positive, a crop
    at the end otherwise. Neither depends on the input size.
    """
    paddings, output_paddings, crops = [], [], []
    for i, (k, s, d) in enumerate(zip(size, strides, dilation)):
        span = (k - 1) * d + 1
        extra = None if output_padding is None else output_padding[i]
        # out - full, with full = (in - 1) * s + span; Keras's output size rules.
        if padding == "valid":
            out_minus_full = max(span, s) - span if extra is None else extra
            before = 0
        else:
            out_minus_full = s - span if extra is None else span % 2 + extra - span
            before = max(-out_minus_full, 0) // 2  # forward 'same' padding of out -> in, first half
        difference = out_minus_full + 2 * before
        paddings.append(before)
        output_paddings.append(max(difference, 0))
        crops.append(max(-difference, 0))
    return tuple(paddings), tuple(output_paddings), tuple(crops)


@converter("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", channels_first=True)
def convert_conv_transpose(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    kernel = weights["kernel"]  # (k..., out, in)
    rank = kernel.ndim - 2
    size, strides, dilation = _geometry(call, rank)
    padding = config.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise call.unsupported(f"padding={padding!r}")
    output_padding = config.get("output_padding")
    output_padding = None if output_padding is None else tuple_of(output_padding, rank)
    out_channels, in_channels = kernel.shape[-2], kernel.shape[-1]
    pads, extras, crops = _transpose_geometry(size, strides, dilation, padding, output_padding)
    cf = call.channels_first_perm()
    args = [str(in_channels), str(out_channels), f"kernel_size={compact(size)}"]
    if any(s != 1 for s in strides):
        args.append(f"stride={compact(strides)}")
    if any(pads):
        args.append(f"padding={compact(pads)}")
    if any(extras):
        args.append(f"output_padding={compact(extras)}")
    if any(d != 1 for d in dilation):
        args.append(f"dilation={compact(dilation)}")
    use_bias = config.get("use_bias", True)
    if not use_bias:
        args.append("bias=False")
    notes = []
    if padding == "valid" and output_padding is None and any(extras):
        notes.append(
            "Keras makes a 'valid' transposed conv (in - 1) * stride + max(kernel, stride) long; "
            "output_padding adds what torch leaves out."
        )
    weight = _to_torch(kernel)  # (in, out, k...)
    state = {"weight": weight}
    init = initializers.init_lines(config.get("kernel_initializer"), kernel.shape, weight.shape, "weight")
    if use_bias:
        _bias(call, weights["bias"], state, init)
    module = Submodule(f"nn.ConvTranspose{rank}d({', '.join(args)})", state, init)
    expr, comment = "{m}({x})", None
    if any(crops):
        slices = [":", ":", *(f":-{c}" if c else ":" for c in crops)]
        while slices[-1] == ":":
            slices.pop()
        expr += f"[{', '.join(slices)}]"
        kept = "in * stride" if output_padding is None else "its"
        comment = (
            f"TF 'same' keeps the first {kept} outputs of the full transposed conv, cropping the end "
            "only; torch's padding= crops both ends evenly."
        )
    return _finish(call, Fragment(call.relayout(cf), notes), expr, cf, {"": module}, comment)


def _depthwise_module(call: LayerCall, kernel: np.ndarray, strides, padding_args, dilation, bias: bool):
    """``nn.ConvNd(C, C * M, groups=C)`` from a Keras depthwise kernel ``(k..., C, M)``."""
    rank = kernel.ndim - 2
    channels, multiplier = kernel.shape[-2], kernel.shape[-1]
    size = kernel.shape[:-2]
    # (k..., C, M) -> (k..., 1, C * M): output channel c * M + m, TF's order.
    weight = _to_torch(kernel.reshape(*size, 1, channels * multiplier))
    args = _conv_args(channels, channels * multiplier, size, strides, padding_args, dilation, channels, bias)
    # Keras computes the initialiser's fans from (k..., C, M), not from torch's (C * M, 1, k...).
    init = initializers.init_lines(
        call.config.get("depthwise_initializer"), kernel.shape, weight.shape, "weight"
    )
    return Submodule(f"nn.Conv{rank}d({args})", {"weight": weight}, init)


@converter("DepthwiseConv1D", "DepthwiseConv2D", channels_first=True)
def convert_depthwise(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    kernel = weights["kernel"]  # (k..., C, M)
    rank = kernel.ndim - 2
    size, strides, dilation = _geometry(call, rank)
    channels, multiplier = kernel.shape[-2], kernel.shape[-1]
    cf = call.channels_first_perm()
    padding_args, code = _padded_input(call, cf, size, strides, dilation)
    use_bias = config.get("use_bias", True)
    module = _depthwise_module(call, kernel, strides, padding_args, dilation, use_bias)
    if use_bias:
        _bias(call, weights["bias"], module.state, module.init)
    outputs = f" ({multiplier} outputs each)" if multiplier > 1 else ""
    module.comment = f"Depthwise: groups={channels}, each input channel convolved on its own{outputs}."
    return _finish(call, code, "{m}({x})", cf, {"": module})


@converter("SeparableConv1D", "SeparableConv2D", channels_first=True)
def convert_separable(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    depthwise_kernel = weights["depthwise_kernel"]  # (k..., C, M)
    pointwise_kernel = weights["pointwise_kernel"]  # (1..., C * M, filters)
    rank = depthwise_kernel.ndim - 2
    size, strides, dilation = _geometry(call, rank)
    cf = call.channels_first_perm()
    padding_args, code = _padded_input(call, cf, size, strides, dilation)
    use_bias = config.get("use_bias", True)
    depthwise = _depthwise_module(call, depthwise_kernel, strides, padding_args, dilation, False)
    depthwise.comment = (
        f"{call.class_name} = depthwise conv (groups={depthwise_kernel.shape[-2]}, no bias), then a "
        f"pointwise kernel_size=1 conv{' carrying the bias' if use_bias else ''}."
    )
    middle, filters = pointwise_kernel.shape[-2:]
    weight = _to_torch(pointwise_kernel)
    init = initializers.init_lines(
        config.get("pointwise_initializer"), pointwise_kernel.shape, weight.shape, "weight"
    )
    pointwise = Submodule(
        f"nn.Conv{rank}d({middle}, {filters}, kernel_size=1{'' if use_bias else ', bias=False'})",
        {"weight": weight},
        init,
    )
    if use_bias:
        _bias(call, weights["bias"], pointwise.state, pointwise.init)
    modules = {"depthwise": depthwise, "pointwise": pointwise}
    return _finish(call, code, "{m_pointwise}({m_depthwise}({x}))", cf, modules)
