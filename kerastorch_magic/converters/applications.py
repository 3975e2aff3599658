"""Custom layers that keras.applications defines: CustomScaleLayer (InceptionResNetV2), LayerScale
and StochasticDepth (ConvNeXt).

They are matched by class name *and* module: a user's own layer that happens to be called
``LayerScale`` is refused by name rather than silently converted with these semantics.
"""

from __future__ import annotations

import numpy as np

from ..registry import Converted, LayerCall, Step, Submodule, converter
from ._source import int_or_tuple, number

_LAYER_SCALE = '''
class LayerScale(nn.Module):
    """ConvNeXt's LayerScale: multiplies each channel by a learned factor (gamma)."""

    def __init__(self, shape, init_value):
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones(shape))

    def forward(self, x):
        return x * self.gamma
'''


def _check_origin(call: LayerCall, module: str) -> None:
    origin = type(call.layer).__module__
    if not origin.startswith(module):
        raise call.unsupported(
            f"a custom layer named like keras.applications' {call.class_name} (defined in {origin}); "
            "register a converter for it with kerastorch_magic.converter"
        )


@converter("CustomScaleLayer", passthrough=True)
def convert_custom_scale(call: LayerCall) -> Converted:
    """InceptionResNetV2's residual scaling: ``inputs[0] + inputs[1] * scale``."""
    _check_origin(call, "keras.src.applications.inception_resnet_v2")
    if len(call.inputs) != 2:
        raise call.unsupported(f"{len(call.inputs)} inputs (a shortcut and a residual expected)")
    perm = call.inputs[0].perm
    shortcut, residual = call.input_as(0, perm), call.input_as(1, perm)
    scale = float(call.config["scale"])
    step = Step(f"{shortcut} + {residual} * {number(scale)}", "Inception-ResNet: shortcut + scaled residual")
    return Converted([step], [call.output_spec(perm)])


@converter("LayerScale", passthrough=True)
def convert_layer_scale(call: LayerCall) -> Converted:
    """ConvNeXt's ``x * gamma``, gamma over the last (channel) axis."""
    _check_origin(call, "keras.src.applications.convnext")
    spec = call.inputs[0]
    (gamma,) = (w for name, w in call.weights.items() if w.ndim == 1)
    channels = gamma.shape[0]
    # gamma broadcasts against the last Keras axis; in the torch layout that axis may sit elsewhere.
    trailing = spec.rank - 1 - spec.torch_dim(-1) if spec.rank > 1 else 0
    shape = (channels,) + (1,) * trailing
    init_value = float(call.config.get("init_values", 1e-6))
    shape_text = int_or_tuple(shape)
    module = Submodule(
        f"LayerScale({shape_text}, {number(init_value)})",
        {"gamma": np.ascontiguousarray(gamma.reshape(shape))},
        [f"nn.init.constant_({{m}}.gamma, {number(init_value)})"],
    )
    helpers = {"LayerScale": _LAYER_SCALE.strip()}
    return Converted([Step("{m}({x})")], [call.output_spec(spec.perm)], {"": module}, helpers=helpers)


@converter("StochasticDepth", passthrough=True)
def convert_stochastic_depth(call: LayerCall) -> Converted:
    """ConvNeXt's drop-path: only active in training, the identity at inference."""
    _check_origin(call, "keras.src.applications.convnext")
    spec = call.inputs[0]
    return Converted([], [call.output_spec(spec.perm)], notes=["StochasticDepth: identity at inference."])
