"""Pooling: MaxPooling and AveragePooling 1D/2D/3D, global and adaptive pooling 1D/2D/3D.

TF's ``padding="same"`` pools ``ceil(size / stride)`` windows with the odd padding cell after
(bottom/right), and padded cells never count: max pooling never picks them, average pooling leaves
them out of the mean. torch does the same with its own padding: ``padding=`` pads max pooling with
-inf and ``count_include_pad=False`` leaves padded cells out of the divisor. The odd cell after:
at stride > 1, ``ceil_mode=True`` adds exactly the window over it (clipped to the input, like TF);
at stride 1 it does not, so the larger pad goes on both sides and the extra first window is
dropped (max pooling pads explicitly with -inf instead, which reads plainer). Where the padding
depends on a size known only at run time, the shared ``_pad_same`` helper pads (-inf for max; for
average, zeros, divided by the pooled count of real cells).
"""

from __future__ import annotations

from ..registry import Converted, Fragment, LayerCall, Step, Submodule, converter
from ._source import compact, int_or_tuple
from .padding import SAME_PAD_HELPER, SAME_PAD_NAME, same_pad, spatial_padding, torch_pad_tuple, tuple_of


def _in_1d_2d_3d(*kinds: str) -> list[str]:
    """The Keras class names of each of ``kinds`` in 1D, 2D and 3D (``MaxPooling1D``...)."""
    return [f"{kind}{rank}D" for kind in kinds for rank in (1, 2, 3)]


@converter(*_in_1d_2d_3d("MaxPooling", "AveragePooling"), channels_first=True)
def convert_pooling(call: LayerCall) -> Converted:
    config = call.config
    rank = call.inputs[0].rank - 2
    size = tuple_of(config["pool_size"], rank)
    strides = tuple_of(config.get("strides") or config["pool_size"], rank)
    if min(strides) < 1:
        raise call.unsupported(f"strides={strides}")
    is_max = call.class_name.startswith("Max")
    cf = call.channels_first_perm()
    steps = call.relayout(cf)
    args = [compact(size)]
    if strides != size:
        args.append(f"stride={compact(strides)}")
    kind = "Max" if is_max else "Avg"
    pads = spatial_padding(call, size, strides, (1,) * rank, allow_dynamic=True)
    if pads is None:  # 'same' at stride > 1 over sizes known only at run time
        module = {"": Submodule(f"nn.{kind}Pool{rank}d({', '.join(args)})")}
        if is_max:
            pooled = (
                Fragment(steps)
                + same_pad(size, strides, value='float("-inf")')
                + Fragment([Step("{m}({x})")])
            )
            return Converted.from_fragment(pooled, [call.output_spec(cf)], module)
        # Zeros in the sum, and the pooled count of real cells as the divisor.
        padded = f"kernel_size={tuple(size)}, stride={tuple(strides)}"
        expr = (
            f"{{m}}({SAME_PAD_NAME}({{x}}, {padded})) "
            f"/ {{m}}({SAME_PAD_NAME}(torch.ones_like({{x}}[:1, :1]), {padded}))"
        )
        comment = (
            "TF 'same' padding depends on the input size here; padded cells count neither in the "
            "sum nor in the divisor (the pooled ones)"
        )
        steps.append(Step(expr, comment))
        return Converted(steps, [call.output_spec(cf)], module, helpers={SAME_PAD_NAME: SAME_PAD_HELPER})
    notes: list[str] = []
    crop = [False] * rank  # dims whose first output window is dropped (see below)
    if any(before or after for before, after in pads):
        pad_text = ", ".join(f"({b}, {a})" for b, a in pads)
        # An odd cell after needs torch's help: at stride > 1, ceil_mode=True adds the window over
        # it; at stride 1 it does not, so pad the larger amount on both sides and drop the extra
        # first window (max pooling: an explicit -inf F.pad is as exact and plainer).
        unit_odd = [after > before and s == 1 for (before, after), s in zip(pads, strides)]
        if is_max and any(unit_odd):
            pad = f'F.pad({{x}}, {torch_pad_tuple(pads)}, value=float("-inf"))'
            steps.append(Step(pad, "TF 'same' padding, odd cell after; -inf never wins the max"))
            notes.append(f"TF 'same' pads (before, after) = {pad_text}; forward pads with -inf.")
        else:
            what = "max pooling never picks them" if is_max else "they do not count in the mean"
            note = f"TF 'same' pads (before, after) = {pad_text}; {what}"
            leading = tuple(a if odd else b for (b, a), odd in zip(pads, unit_odd))
            if any(leading):
                args.append(f"padding={compact(leading)}")
            if any(a > b and s > 1 for (b, a), s in zip(pads, strides)):
                args.append("ceil_mode=True")
                note += "; ceil_mode=True adds the window over the extra cell after"
            if any(unit_odd):
                crop = unit_odd
                note += "; at stride 1 torch pads the larger side both ways, forward drops the first window"
            if not is_max:
                args.append("count_include_pad=False")
            if call.config.get("padding") == "same":  # not a ZeroPadding folded in: its note says why
                notes.append(note + ".")
    ctor = f"nn.{kind}Pool{rank}d({', '.join(args)})"
    expr = "{m}({x})"
    if any(crop):
        index = [":", ":", *("1:" if c else ":" for c in crop)]
        while index[-1] == ":":
            index.pop()
        expr += "[" + ", ".join(index) + "]"
    steps.append(Step(expr))
    return Converted(steps, [call.output_spec(cf)], {"": Submodule(ctor)}, notes)


@converter(*_in_1d_2d_3d("GlobalAveragePooling", "GlobalMaxPooling"), channels_first=True)
def convert_global_pooling(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    rank = spec.rank
    if call.config.get("data_format", "channels_last") == "channels_first":
        spatial = range(2, rank)
    else:
        spatial = range(1, rank - 1)
    # Reduce over wherever the spatial axes sit in torch: no permute needed in any layout.
    dims = sorted(spec.torch_dim(axis) for axis in spatial)
    keepdims = bool(call.config.get("keepdims", False))
    keep = ", keepdim=True" if keepdims else ""
    out_perm = spec.perm if keepdims else (0, 1)
    masks = call.argument_inputs("mask")
    if masks:  # only GlobalAveragePooling1D takes a mask (GlobalMaxPooling1D ignores it)
        return _masked_average(call, masks[0], dims[0], keep, out_perm)
    method = "mean" if "Average" in call.class_name else "amax"
    dim = int_or_tuple(dims)
    return Converted([Step(f"{{x}}.{method}(dim={dim}{keep})")], [call.output_spec(out_perm)])


def _masked_average(call: LayerCall, index: int, dim: int, keep: str, out_perm) -> Converted:
    """Keras's masked mean over the steps: masked steps count neither in the sum nor in the divisor."""
    mask = "{x" + str(index) + "}"
    if call.inputs[index].dtype != "bool":
        mask += ".bool()"
    # The (N, T) mask broadcast against the input's torch layout: T where the steps are.
    spread = ", ".join(":" if d in (0, dim) else "None" for d in range(call.inputs[0].rank))
    mask = f"{mask}[{spread}]"
    expr = f"torch.where({mask}, {{x0}}, 0.0).sum(dim={dim}{keep}) / {mask}.sum(dim={dim}{keep})"
    comment = "Keras averages over the unmasked steps only (mask from Embedding(mask_zero)/Masking)"
    return Converted([Step(expr, comment)], [call.output_spec(out_perm)])


# -- adaptive pooling ------------------------------------------------------------------------------
@converter(*_in_1d_2d_3d("AdaptiveAveragePooling", "AdaptiveMaxPooling"), channels_first=True)
def convert_adaptive_pooling(call: LayerCall) -> Converted:
    """``nn.AdaptiveAvgPool*d``/``nn.AdaptiveMaxPool*d``, channels-first like the other pooling.

    Keras defines these layers by torch's windows (``start = floor(i * in / out)``, ``end =
    ceil((i + 1) * in / out)``; its TF kernels rebuild them), so torch's modules are exact.
    """
    rank = call.inputs[0].rank - 2
    size = tuple_of(call.config["output_size"], rank)
    kind = "Max" if "Max" in call.class_name else "Avg"
    cf = call.channels_first_perm()
    module = Submodule(f"nn.Adaptive{kind}Pool{rank}d({compact(size)})")
    return Converted([*call.relayout(cf), Step("{m}({x})")], [call.output_spec(cf)], {"": module})
