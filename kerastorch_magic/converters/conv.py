"""Convolutions: Conv1D/2D/3D."""

from __future__ import annotations

import numpy as np

from .. import initializers
from ..registry import Converted, LayerCall, Step, Submodule, converter
from .activations import apply_activation
from .padding import compact, spatial_padding, torch_pad_tuple, tuple_of


@converter("Conv1D", "Conv2D", "Conv3D", channels_first=True)
def convert_conv(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    kernel = weights["kernel"]  # (k..., in / groups, out)
    rank = kernel.ndim - 2
    size, strides = tuple_of(config["kernel_size"], rank), tuple_of(config["strides"], rank)
    dilation = tuple_of(config.get("dilation_rate", 1), rank)
    groups = int(config.get("groups", 1))
    in_channels, out_channels = kernel.shape[-2] * groups, kernel.shape[-1]
    cf = call.channels_first_perm()
    steps = call.relayout(cf)
    notes: list[str] = []
    pads = spatial_padding(call, size, strides, dilation)
    args = [str(in_channels), str(out_channels), f"kernel_size={compact(size)}"]
    if any(s != 1 for s in strides):
        args.append(f"stride={compact(strides)}")
    if all(before == after for before, after in pads):
        if any(before for before, _ in pads):
            args.append(f"padding={compact(tuple(b for b, _ in pads))}")
            if config.get("padding") == "same" and any(s != 1 for s in strides):
                notes.append("Keras padding='same' with this input size pads evenly here.")
    else:
        pad = torch_pad_tuple(pads)
        why = (
            "Keras 'causal' padding: pad the start of the sequence only."
            if config.get("padding") == "causal"
            else "TF 'same' padding puts the odd pixel after (bottom/right); torch pads evenly, "
            "so pad explicitly."
        )
        steps.append(Step(f"F.pad({{x}}, {pad})", why))
    if any(d != 1 for d in dilation):
        args.append(f"dilation={compact(dilation)}")
    if groups != 1:
        args.append(f"groups={groups}")
    use_bias = config.get("use_bias", True)
    if not use_bias:
        args.append("bias=False")
    # Keras kernel (k..., in, out) -> torch (out, in, k...).
    weight = np.ascontiguousarray(np.transpose(kernel, (rank + 1, rank, *range(rank))))
    state = {"weight": weight}
    init = initializers.init_lines(config.get("kernel_initializer"), kernel.shape, weight.shape, "weight")
    if use_bias:
        state["bias"] = weights["bias"]
        init += initializers.init_lines(
            config.get("bias_initializer"), (out_channels,), (out_channels,), "bias"
        )
    expr, act_notes = apply_activation(call, "{m}({x})", config.get("activation"), 1)
    steps.append(Step(expr))
    ctor = f"nn.Conv{rank}d({', '.join(args)})"
    return Converted(steps, [call.output_spec(cf)], {"": Submodule(ctor, state, init)}, notes + act_notes)
