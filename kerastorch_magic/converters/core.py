"""Dense and the layers that are the identity at inference."""

from __future__ import annotations

import numpy as np

from .. import initializers, layout
from ..registry import Converted, LayerCall, Step, Submodule, converter
from .activations import apply_activation


@converter("Dense")
def convert_dense(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    weights = call.weights
    kernel = weights["kernel"]  # (in, out)
    units_in, units_out = kernel.shape
    notes: list[str] = []
    steps = []
    if spec.flat_order is not None:
        # Keras flattened (H, W, C); torch flattens (C, H, W): reorder the weight's columns once.
        kernel = kernel[spec.flat_order]
        notes.append(
            "Keras flattens in (H, W, C) order; this layer's weights were reordered so that a "
            "plain channels-first flatten gives the same result."
        )
    elif spec.rank > 2 and spec.perm[-1] != spec.rank - 1:
        # Dense acts on the last Keras axis: bring channels last (nn.Linear works on the last dim).
        steps += call.relayout(layout.identity(spec.rank))
    out_perm = layout.identity(spec.rank) if spec.rank > 2 else spec.perm
    use_bias = call.config.get("use_bias", True)
    state = {"weight": np.ascontiguousarray(kernel.T)}
    init = initializers.init_lines(
        call.config.get("kernel_initializer"), kernel.shape, kernel.T.shape, "weight"
    )
    if use_bias:
        state["bias"] = weights["bias"]
        init += initializers.init_lines(
            call.config.get("bias_initializer"), (units_out,), (units_out,), "bias"
        )
    ctor = f"nn.Linear({units_in}, {units_out}{'' if use_bias else ', bias=False'})"
    expr, act_notes = apply_activation(call, "{m}({x})", call.config.get("activation"), len(out_perm) - 1)
    steps.append(Step(expr))
    return Converted(
        steps,
        [call.output_spec(out_perm)],
        {"": Submodule(ctor, state, init)},
        notes + act_notes,
    )


@converter(
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
    passthrough=True,
)
def convert_identity(call: LayerCall) -> Converted:
    """Regularisers that only act in training: the identity in the exported (eval) model."""
    spec = call.inputs[0]
    return Converted([], [spec if spec.flat_order is not None else call.output_spec(spec.perm)])
