"""Activation functions (the ``activation=`` argument and the activation layers)."""

from __future__ import annotations

from ..registry import Converted, LayerCall, Step, converter

# Keras activation name -> (torch expression with {x} and {dim}, note or None).
_ACTIVATIONS: dict[str, tuple[str, str | None]] = {
    "linear": ("{x}", None),
    "relu": ("F.relu({x})", None),
    "sigmoid": ("torch.sigmoid({x})", None),
    "tanh": ("torch.tanh({x})", None),
    "softmax": (
        "F.softmax({x}, dim={dim})",
        "softmax kept as in Keras; to train with nn.CrossEntropyLoss, return the logits instead.",
    ),
}


def activation_name(value) -> str:
    """The plain name of an ``activation`` config entry (string or serialised function)."""
    if value is None:
        return "linear"
    if isinstance(value, dict):
        value = value.get("config", value.get("class_name"))
        if isinstance(value, dict):
            value = value.get("name", "")
    return str(value)


def apply_activation(call: LayerCall, expr: str, name, dim: int) -> tuple[str, list[str]]:
    """``expr`` wrapped in the activation ``name``; returns the expression and notes."""
    key = activation_name(name)
    if key not in _ACTIVATIONS:
        raise call.unsupported(f"activation {key!r} has no converter")
    template, note = _ACTIVATIONS[key]
    return template.format(x=expr, dim=dim), [note] if note else []


@converter("Activation", passthrough=True)
def convert_activation(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    expr, notes = apply_activation(call, "{x}", call.config["activation"], spec.torch_dim(-1))
    steps = [] if expr == "{x}" else [Step(expr)]
    return Converted(steps, [call.output_spec(spec.perm)], notes=notes)
