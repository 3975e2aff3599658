"""Dense, Embedding, Masking and the layers that only act in training (dropouts, noise)."""

from __future__ import annotations

import numpy as np

from .. import initializers, layout
from ..registry import Converted, Fragment, LayerCall, Step, Submodule, converter
from ._common import same_layout
from .activations import activation_steps


def _numpy(value) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


def _refuse_quantized(call: LayerCall) -> None:
    mode = getattr(call.layer, "quantization_mode", None)
    if mode:
        raise call.unsupported(
            f"quantized ({mode}) layers compute on quantized values; convert the float model instead"
        )


@converter("Dense")
def convert_dense(call: LayerCall) -> Converted:
    _refuse_quantized(call)
    spec, layer, config = call.inputs[0], call.layer, call.config
    notes: list[str] = []
    if getattr(layer, "lora_enabled", False):  # Keras computes with kernel + alpha / rank * A @ B
        kernel = _numpy(layer.kernel)
        notes.append("LoRA adapter merged into the weight (kernel + alpha / rank * A @ B).")
    else:
        kernel = call.weights["kernel"]  # (in, out)
    units_in, units_out = kernel.shape
    source, comment = "{x}", None
    out_perm = spec.perm
    if spec.flat_order is not None:
        # Keras flattened (H, W, C); torch flattens (C, H, W): reorder the weight's columns once.
        kernel = kernel[spec.flat_order]
        notes.append(
            "Keras flattens in (H, W, C) order; this layer's weights were reordered so that a "
            "plain channels-first flatten gives the same result."
        )
    elif spec.rank > 2 and spec.perm[-1] != spec.rank - 1:
        # Dense acts on the last Keras axis and nn.Linear on the last torch dim: bring it last.
        out_perm = layout.identity(spec.rank)
        source = call.input_as(0, out_perm)
        comment = "Dense acts on Keras's last (channel) axis: channels-last for nn.Linear"
    use_bias = config.get("use_bias", True)
    weight = np.ascontiguousarray(kernel.T)
    state = {"weight": weight}
    init = initializers.init_lines(config.get("kernel_initializer"), kernel.shape, weight.shape, "weight")
    if use_bias:
        state["bias"] = _numpy(layer.bias)
        init += initializers.init_lines(config.get("bias_initializer"), (units_out,), (units_out,), "bias")
    ctor = f"nn.Linear({units_in}, {units_out}{'' if use_bias else ', bias=False'})"
    act = activation_steps(call, f"{{m}}({source})", config.get("activation"), len(out_perm) - 1, comment)
    return Converted.from_fragment(
        Fragment(notes=notes) + act, [call.output_spec(out_perm)], {"": Submodule(ctor, state, init)}
    )


@converter("Embedding")
def convert_embedding(call: LayerCall) -> Converted:
    _refuse_quantized(call)
    spec, layer, config = call.inputs[0], call.layer, call.config
    weight = np.ascontiguousarray(_numpy(layer.embeddings))  # (input_dim, output_dim): as is
    rows, width = weight.shape
    notes: list[str] = []
    if getattr(layer, "lora_enabled", False):
        notes.append("LoRA adapter merged into the weight (embeddings + alpha / rank * A @ B).")
    if config.get("mask_zero"):
        notes.append(
            "Keras mask_zero=True: index 0 also makes a mask for mask-aware layers downstream. "
            "That is not torch's padding_idx (which only freezes row 0's gradient), so none is set."
        )
    expr, comment = "{m}({x})", None
    if str(spec.dtype) not in ("int32", "int64"):
        expr, comment = "{m}({x}.long())", "Keras casts the indices to int32 (truncating); torch takes int64"
    init = initializers.init_lines(config.get("embeddings_initializer"), weight.shape, weight.shape, "weight")
    module = Submodule(f"nn.Embedding({rows}, {width})", {"weight": weight}, init)
    out = call.output_spec((*spec.perm, spec.rank))  # the new last axis stays last
    return Converted([Step(expr, comment)], [out], {"": module}, notes)


@converter("Masking", passthrough=True)
def convert_masking(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    value = float(call.layer.mask_value)
    dim = spec.torch_dim(-1)
    step = Step(
        f"torch.where({{x}}.ne({value!r}).any(dim={dim}, keepdim=True), {{x}}, 0.0)",
        f"Keras Masking: zero the steps whose features all equal {value!r}",
    )
    note = (
        "Keras also hands the mask to mask-aware layers downstream (RNNs, attention, pooling): "
        "the port computes it where they read it and passes it to them."
    )
    return Converted([step], [same_layout(call, spec)], notes=[note])


# -- layers that only act in training -------------------------------------------------------------
@converter("Dropout", "AlphaDropout", passthrough=True)
def convert_dropout(call: LayerCall) -> Converted:
    """nn.Dropout / nn.AlphaDropout: the identity in eval mode, Keras's dropout in training."""
    spec, layer = call.inputs[0], call.layer
    kind = "AlphaDropout" if call.class_name == "AlphaDropout" else "Dropout"
    comment = None
    if getattr(layer, "noise_shape", None) is not None:
        comment = (
            f"Keras noise_shape={tuple(layer.noise_shape)} shares the dropout mask over some axes; "
            "torch's dropout draws it per element (training only)."
        )
    module = Submodule(f"nn.{kind}(p={float(layer.rate)!r})", comment=comment)
    return Converted([Step("{m}({x})")], [same_layout(call, spec)], {"": module})


@converter("RandomDropout", operation=True)
def convert_random_dropout(call: LayerCall) -> Converted:
    """Dropout a traced call() applies at inference (Monte Carlo dropout): random at every call."""
    comment = "Monte Carlo dropout: active at inference too, as the Keras call() asks"
    function = "F.alpha_dropout" if call.layer.alpha else "F.dropout"
    step = Step(f"{function}({{x}}, p={call.layer.rate!r}, training=True)", comment)
    return Converted([step], [call.output_spec(call.inputs[0].perm)])


@converter("SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", passthrough=True)
def convert_spatial_dropout(call: LayerCall) -> Converted:
    """Whole-channel dropout: nn.Dropout1d/2d/3d, which drop torch dim 1."""
    spec, layer = call.inputs[0], call.layer
    kind = call.class_name[-2:].lower()  # "1d" / "2d" / "3d"
    channels_axis = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1
    dim = spec.torch_dim(channels_axis)
    module = Submodule(f"nn.Dropout{kind}(p={float(layer.rate)!r})")
    if dim == 1:
        step = Step("{m}({x})")
    else:
        step = Step(
            f"{{m}}({{x}}.movedim({dim}, 1)).movedim(1, {dim})",
            f"nn.Dropout{kind} drops whole channels of dim 1 (training only)",
        )
    return Converted([step], [call.output_spec(spec.perm)], {"": module})


@converter("GaussianNoise", passthrough=True)
def convert_gaussian_noise(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    stddev = float(call.layer.stddev)
    step = Step(
        f"{{x}} + {stddev!r} * torch.randn_like({{x}}) if self.training else {{x}}",
        "Keras GaussianNoise: additive noise while training, the identity in eval mode",
    )
    return Converted([step], [same_layout(call, spec)])


@converter("GaussianDropout", passthrough=True)
def convert_gaussian_dropout(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    rate = float(call.layer.rate)
    stddev = float(np.sqrt(rate / (1.0 - rate))) if rate < 1 else 0.0
    step = Step(
        f"{{x}} * (1 + {stddev:.6g} * torch.randn_like({{x}})) if self.training else {{x}}",
        f"Keras GaussianDropout(rate={rate:g}): noise of mean 1, std sqrt(rate / (1 - rate)) "
        "while training, the identity in eval mode",
    )
    return Converted([step], [same_layout(call, spec)])


@converter("ActivityRegularization", passthrough=True)
def convert_activity_regularization(call: LayerCall) -> Converted:
    spec, layer = call.inputs[0], call.layer
    penalties = " + ".join(
        f"{float(v):g} * {term}" for v, term in ((layer.l1, "sum(|x|)"), (layer.l2, "sum(x ** 2)")) if v
    )
    comment = (
        "Keras ActivityRegularization: the identity; in training Keras adds "
        + (penalties or "nothing")
        + " to the loss (add it to yours)."
    )
    module = Submodule("nn.Identity()", comment=comment)
    return Converted([Step("{m}({x})")], [same_layout(call, spec)], {"": module})


@converter("Identity", passthrough=True)
def convert_identity(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    return Converted([], [same_layout(call, spec)])
