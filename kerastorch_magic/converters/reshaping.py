"""Reshaping layers: Flatten."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import layout
from ..registry import Converted, LayerCall, Step, converter

# Layers a folded flatten order may pass through on its way to the Dense that absorbs it.
_ORDER_TRANSPARENT = {
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
}


def _folds_into_dense(call: LayerCall) -> bool:
    """Whether every reader of the flatten is (through dropouts) a Dense that is called once."""
    if call.is_model_output or not call.consumers:
        return False
    for reader in call.consumers:
        while reader.class_name in _ORDER_TRANSPARENT:
            return False  # keep it simple and exact: only direct Dense readers fold
        if reader.class_name != "Dense" or len(reader.layer._inbound_nodes) != 1:
            return False
    return True


@converter("Flatten")
def convert_flatten(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    out = call.output_spec(layout.identity(2))
    if spec.rank <= 2:
        return Converted([], [out])
    if layout.is_identity(spec.perm):
        return Converted([Step("torch.flatten({x}, 1)")], [out])
    if _folds_into_dense(call):
        # torch flattens its own (permuted) order; record which Keras element each column holds.
        keras_shape = tuple(int(d) for d in spec.keras_shape[1:])
        order = np.arange(int(np.prod(keras_shape))).reshape(keras_shape)
        order = np.transpose(order, [p - 1 for p in spec.perm[1:]]).reshape(-1)
        return Converted([Step("torch.flatten({x}, 1)")], [replace(out, flat_order=order)])
    steps = call.relayout(layout.identity(spec.rank))
    steps[-1].comment = "Keras flattens in channels-last order"
    steps.append(Step("torch.flatten({x}, 1)"))
    return Converted(steps, [out])
