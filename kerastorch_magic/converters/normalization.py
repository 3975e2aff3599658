"""BatchNormalization."""

from __future__ import annotations

import numpy as np

from .. import layout
from ..registry import Converted, LayerCall, Step, Submodule, converter


@converter("BatchNormalization", passthrough=True)
def convert_batch_norm(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    spec = call.inputs[0]
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) else axis
    steps = []
    perm = spec.perm
    if spec.torch_dim(axis) != 1:  # torch normalises dim 1: bring the Keras axis there
        perm = layout.axis_first(spec.rank, axis)
        steps = call.relayout(perm)
    mean, var = weights["moving_mean"], weights["moving_variance"]
    channels = mean.shape[0]
    kind = {2: 1, 3: 1, 4: 2, 5: 3}.get(spec.rank)
    if kind is None:
        raise call.unsupported(f"BatchNormalization on a rank-{spec.rank} tensor")
    eps, momentum = float(config.get("epsilon", 1e-3)), float(config.get("momentum", 0.99))
    args = [str(channels), f"eps={eps:g}", f"momentum={1 - momentum:.6g}"]
    center, scale = config.get("center", True), config.get("scale", True)
    affine = center or scale
    if not affine:
        args.append("affine=False")
    state = {
        "running_mean": mean,
        "running_var": var,
        "num_batches_tracked": np.array(0, dtype=np.int64),
    }
    if affine:
        state["weight"] = weights["gamma"] if scale else np.ones(channels, np.float32)
        state["bias"] = weights["beta"] if center else np.zeros(channels, np.float32)
    notes = [
        f"Keras BatchNormalization: eps={eps:g} (torch default 1e-5), momentum {momentum:g} is "
        f"torch's {1 - momentum:.6g} (torch weighs the new batch, Keras the running value)."
    ]
    if affine and not (center and scale):
        notes.append("Keras learns only " + ("beta" if center else "gamma") + "; the other is fixed.")
    init = ["{m}.reset_parameters()"]
    ctor = f"nn.BatchNorm{kind}d({', '.join(args)})"
    return Converted(
        [*steps, Step("{m}({x})")],
        [call.output_spec(perm)],
        {"": Submodule(ctor, state, init)},
        notes,
    )
