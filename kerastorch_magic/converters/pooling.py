"""Pooling: MaxPooling and AveragePooling 1D/2D/3D."""

from __future__ import annotations

from ..registry import Converted, LayerCall, Step, Submodule, converter
from .padding import compact, spatial_padding, torch_pad_tuple, tuple_of


@converter(
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    channels_first=True,
)  # fmt: skip
def convert_pooling(call: LayerCall) -> Converted:
    config = call.config
    rank = call.inputs[0].rank - 2
    size = tuple_of(config["pool_size"], rank)
    strides = tuple_of(config.get("strides") or config["pool_size"], rank)
    is_max = call.class_name.startswith("Max")
    cf = call.channels_first_perm()
    steps = call.relayout(cf)
    pads = spatial_padding(call, size, strides, (1,) * rank)
    args = [f"kernel_size={compact(size)}"]
    if strides != size:
        args.append(f"stride={compact(strides)}")
    notes = []
    if any(before or after for before, after in pads):
        if is_max:
            steps.append(
                Step(
                    f"F.pad({{x}}, {torch_pad_tuple(pads)}, value=float('-inf'))",
                    "TF 'same' max pooling never picks padding: pad with -inf, odd pixel after.",
                )
            )
        elif all(b == a for b, a in pads):
            args += [f"padding={compact(tuple(b for b, _ in pads))}", "count_include_pad=False"]
            notes.append("TF 'same' average pooling leaves padded cells out of the mean.")
        else:
            raise call.unsupported("asymmetric 'same' average pooling")
    kind = "Max" if is_max else "Avg"
    ctor = f"nn.{kind}Pool{rank}d({', '.join(args)})"
    steps.append(Step("{m}({x})"))
    return Converted(steps, [call.output_spec(cf)], {"": Submodule(ctor)}, notes)
