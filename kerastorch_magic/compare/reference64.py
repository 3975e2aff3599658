"""Keras's output of one layer recomputed in float64: which side of a disagreement is the rounded one.

Where a layer disagrees with its port even when both are fed Keras's own inputs, either the port is
wrong or Keras's float32 result is the less accurate of the two. The second happens: Keras's
``LayerNormalization`` computes ``x * inv + (beta - mean * inv)``, and over a single feature, with
``epsilon=1e-6``, ``inv`` is 1000 and the two terms cancel to round-off in ``x * 1000`` where
``nn.LayerNorm`` computes ``(x - mean) * inv``, exactly 0 (keras-io's time-series Transformer
normalises its one-feature input that way). The same layer rebuilt in float64 (same config, same
weights, the float32 inputs widened) is the reference that tells them apart.
"""

from __future__ import annotations

import keras
import numpy as np


def output_in_float64(operation, args: tuple, kwargs: dict, index: int):
    """Output ``index`` of ``operation`` run in float64 on ``args``/``kwargs`` (float32 tensors
    widened), or None where that cannot be done faithfully (a layer that cannot be rebuilt from its
    config, weights that do not line up, any error): no evidence is better than wrong evidence."""
    try:
        args64, kwargs64 = keras.tree.map_structure(_widen, (args, kwargs))
        if isinstance(operation, keras.layers.Layer):
            outputs = _call_float64_twin(operation, args64, kwargs64)
        else:  # a keras.ops operation: no weights, no dtype policy, it follows its inputs
            outputs = operation(*args64, **kwargs64)
        output = keras.tree.flatten(outputs)[index]
        if keras.backend.standardize_dtype(output.dtype) != "float64":
            return None  # the layer computed in another dtype after all: not a float64 reference
        return output
    except Exception:  # noqa: BLE001 - whatever stops the rebuild, there is simply no evidence
        return None


def _call_float64_twin(layer, args: tuple, kwargs: dict):
    """The same layer rebuilt in float64 from its config, given its weights (widened), called."""
    weights = layer.get_weights()
    twin = type(layer).from_config({**layer.get_config(), "dtype": "float64"})
    twin(*args, **kwargs)  # builds the variables, in float64
    mine = twin.get_weights()
    if len(mine) != len(weights) or any(a.shape != b.shape for a, b in zip(mine, weights)):
        raise ValueError("the float64 twin's weights do not line up with the layer's")
    twin.set_weights([w.astype(np.float64) if w.dtype == np.float32 else w for w in weights])
    return twin(*args, **kwargs)


def _widen(value):
    dtype = getattr(value, "dtype", None)
    if dtype is not None and keras.backend.standardize_dtype(dtype) == "float32":
        return keras.ops.cast(value, "float64")
    return value
