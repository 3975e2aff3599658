"""BatchNormalization folded into the convolution or Dense layer before it (inference only).

In eval mode a BatchNorm is a per-channel affine map ``y = (z - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. When ``z`` is a convolution's or Dense layer's output read by
nothing else, ``W' = W * s`` (per output channel) and ``b' = (b - mean) * s + beta`` give ``y``
in one layer: what tf2onnx and ``torch.ao.quantization.fuse_modules`` do. The folded weights go
into a fresh Keras layer of the same class (bias on), so the layer's own converter writes the
code; :mod:`idioms` puts that layer in the graph in place of the pair.
"""

from __future__ import annotations

import numpy as np

from .idioms import Fused, Fusion, Skipped
from .ir import Graph, Node

# Layer class -> the weight whose last axis (the last two for a depthwise kernel: channel and
# multiplier, TF's output order c * M + m) indexes the output channels.
_FOLDABLE = {
    "Conv1D": "kernel",
    "Conv2D": "kernel",
    "Conv3D": "kernel",
    "DepthwiseConv1D": "kernel",
    "DepthwiseConv2D": "kernel",
    "SeparableConv1D": "pointwise_kernel",
    "SeparableConv2D": "pointwise_kernel",
    "Dense": "kernel",
}


def batchnorm_fusions(graph: Graph, taken: set[int]) -> list[Fusion]:
    """A fusion per BatchNorm whose input is a foldable layer's output read by nothing else."""
    readers = graph.readers()
    outputs = {id(v) for v in graph.outputs}
    producer = graph.producers()
    calls = graph.calls_per_layer()
    fusions = []
    for norm in graph.nodes:
        if norm.class_name != "BatchNormalization" or norm.is_operation or len(norm.inputs) != 1:
            continue
        layer = producer.get(id(norm.inputs[0]))
        if layer is None or id(norm) in taken or id(layer) in taken:
            continue
        value = layer.outputs[0]
        sole_reader = readers.get(id(value)) == [norm] and id(value) not in outputs
        if sole_reader and calls[id(layer.layer)] == 1 and _foldable(layer, norm):
            fusions.append(_fold(layer, norm))
    return fusions


def _foldable(node: Node, norm: Node) -> bool:
    """A plain, linear layer of a foldable class whose channel axis the BatchNorm normalises."""
    if isinstance(node, (Fused, Skipped)) or node.is_operation or node.class_name not in _FOLDABLE:
        return False
    layer = node.layer
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return False
    activation = getattr(layer, "activation", None)
    if activation is not None and getattr(activation, "__name__", "") != "linear":
        return False
    if len(node.outputs) != 1 or len(norm.outputs) != 1 or norm.layer.dtype != "float32":
        return False
    rank = len(node.outputs[0].shape)
    axis = norm.layer.axis
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if not isinstance(axis, int):
        return False
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    channel_axis = 1 if channels_first and node.class_name != "Dense" else rank - 1
    return axis % rank == channel_axis


def _scale_shift(norm) -> tuple[np.ndarray, np.ndarray]:
    """The BatchNorm's eval-mode affine map as (scale, shift), computed in float64."""
    weights = {w.name: np.asarray(w.numpy(), dtype=np.float64) for w in norm.weights}
    mean, variance = weights["moving_mean"], weights["moving_variance"]
    gamma = weights.get("gamma", np.ones_like(mean)) if norm.scale else np.ones_like(mean)
    beta = weights.get("beta", np.zeros_like(mean)) if norm.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(variance + float(norm.epsilon))
    return scale, beta - mean * scale


def _fold(node: Node, norm: Node) -> Fusion:
    """A new layer like ``node``'s, bias on, carrying the BatchNorm in its weights."""
    layer = node.layer
    weights = {w.name: np.asarray(w.numpy(), dtype=np.float64) for w in layer.weights}
    scale, shift = _scale_shift(norm.layer)
    main = _FOLDABLE[node.class_name]
    kernel = weights[main]
    if node.class_name.startswith("Depthwise"):  # (k..., C, M): output channel c * M + m
        weights[main] = kernel * scale.reshape(kernel.shape[-2:])
    else:
        weights[main] = kernel * scale
    bias = weights.get("bias", np.zeros(scale.shape))
    weights["bias"] = bias * scale + shift
    config = {**layer.get_config(), "use_bias": True, "name": layer.name}
    folded = type(layer).from_config(config)
    folded.build(tuple(node.inputs[0].shape))
    for variable in folded.weights:
        variable.assign(weights[variable.name].astype(np.float32))
    note = f"BatchNorm {norm.layer.name!r} folded into the weight and bias (see the class docstring)."
    return Fusion(
        [node, norm],
        folded,
        list(node.inputs),
        note,
        how=f"BatchNorm {norm.layer.name!r} folded into this layer",
    )
