"""Activation functions (the ``activation=`` argument) and the activation layers.

Every name in ``keras.activations`` maps to an idiomatic torch expression, checked numerically
against Keras (tests/test_activations.py). Where torch has no twin (``squareplus``,
``sparse_plus``, ``sparsemax``) the generated code spells out Keras's own formula.

Converters with an ``activation=`` option call :func:`activation_steps`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..registry import Converted, Fragment, LayerCall, Step, Submodule, converter
from ._common import has_keras_mask, same_layout
from ._source import int_or_tuple, number, size_args
from .activation_functions import known_function, traced_function

_SOFTMAX_NOTE = "softmax as in Keras; for nn.CrossEntropyLoss, return the logits instead."


@dataclass(frozen=True)
class _Activation:
    """A torch expression template: ``{x}`` the input, ``{dim}`` the torch dim of Keras's axis -1."""

    template: str
    note: str | None = None
    helper: str | None = None  # name of a module-level function the expression calls
    sources: tuple[tuple[str, str], ...] = ()  # (name, source) of traced functions it calls

    @property
    def reads_input_twice(self) -> bool:
        return self.template.count("{x}") > 1


# Keras activation name -> torch expression. Defaults that differ between the libraries are
# passed explicitly (leaky_relu's slope); the rest share torch's defaults (elu/celu alpha=1,
# soft/hard shrink threshold 0.5, gelu exact erf form: keras.activations.gelu has
# approximate=False, like F.gelu).
_ACTIVATIONS: dict[str, _Activation] = {
    "linear": _Activation("{x}"),
    "relu": _Activation("F.relu({x})"),
    "relu6": _Activation("F.relu6({x})"),
    "leaky_relu": _Activation(
        "F.leaky_relu({x}, negative_slope=0.2)",
        "Keras's leaky_relu activation has slope 0.2 (torch's default is 0.01).",
    ),
    "elu": _Activation("F.elu({x})"),
    "selu": _Activation("F.selu({x})"),
    "celu": _Activation("F.celu({x})"),
    "gelu": _Activation("F.gelu({x})"),
    "silu": _Activation("F.silu({x})"),
    "swish": _Activation("F.silu({x})"),
    "hard_sigmoid": _Activation(
        "F.hardsigmoid({x})",
        "Keras 3's hard_sigmoid is relu6(x + 3) / 6, torch's F.hardsigmoid (Keras 2 used 0.2 * x + 0.5).",
    ),
    "hard_silu": _Activation("F.hardswish({x})"),
    "hard_swish": _Activation("F.hardswish({x})"),
    "softplus": _Activation("F.softplus({x})"),
    "softsign": _Activation("F.softsign({x})"),
    "soft_shrink": _Activation("F.softshrink({x})"),
    "hard_shrink": _Activation("F.hardshrink({x})"),
    "tanh_shrink": _Activation("F.tanhshrink({x})"),
    "hard_tanh": _Activation("F.hardtanh({x})"),
    "mish": _Activation("F.mish({x})"),
    "log_sigmoid": _Activation("F.logsigmoid({x})"),
    "sigmoid": _Activation("torch.sigmoid({x})"),
    "tanh": _Activation("torch.tanh({x})"),
    "exponential": _Activation("torch.exp({x})"),
    "sparse_sigmoid": _Activation(
        "(F.hardtanh({x}) + 1) / 2", "Keras sparse_sigmoid: (x + 1) / 2 clipped to [0, 1]."
    ),
    "sparse_plus": _Activation(
        "torch.where({x} <= -1, 0.0, torch.where({x} < 1, 0.25 * ({x} + 1) ** 2, {x}))",
        "Keras sparse_plus (no torch twin): 0 below -1, (x + 1)^2 / 4 up to 1, x above.",
    ),
    "squareplus": _Activation(
        "({x} + torch.sqrt({x} * {x} + 4)) / 2", "Keras squareplus (no torch twin), b=4."
    ),
    "glu": _Activation("F.glu({x}, dim={dim})"),
    "softmax": _Activation("F.softmax({x}, dim={dim})", _SOFTMAX_NOTE),
    "log_softmax": _Activation("F.log_softmax({x}, dim={dim})"),
    "sparsemax": _Activation("sparsemax({x}, dim={dim})", helper="sparsemax"),
}

# keras.activations names that cannot be used by name: Keras itself fails to call them without
# arguments (``threshold(x, threshold, default_value)`` has no defaults).
KERAS_UNUSABLE_BY_NAME = frozenset({"threshold"})


def activation_name(value) -> str:
    """The plain name of an ``activation`` config entry (string or serialised function)."""
    if value is None:
        return "linear"
    if isinstance(value, dict):
        value = value.get("config", value.get("class_name"))
        if isinstance(value, dict):
            value = value.get("name", "")
    return str(value)


def supported_activations() -> list[str]:
    """Every ``keras.activations`` name with a torch translation, sorted."""
    return sorted(_ACTIVATIONS)


def _lookup(call: LayerCall, name, dim: int) -> tuple[str, _Activation]:
    # A custom function that happens to share a built-in's name must not pass for it: find the
    # layer attribute this config entry configures (``activation``, ``recurrent_activation``...).
    function = _configured_function(call, name)
    if _is_layer(function):  # activation=keras.layers.LeakyReLU(0.2): the layer's own formula
        return type(function).__name__, _layer_activation(call, function)
    known = known_function(function)  # activation=keras.ops.gelu, tf.nn.gelu...: no custom code
    if known is not None and known.name is not None:
        return known.name, _ACTIVATIONS[known.name]
    if known is not None:
        return known.label, _Activation(known.template, known.note)
    key = activation_name(name)
    entry = _ACTIVATIONS.get(key)
    if callable(function) and not _is_builtin(function, key):  # the user's own: traced into a def
        mine = traced_function(call, function, dim)
        return mine.label, _Activation(mine.template, sources=mine.sources)
    if entry is None:
        raise call.unsupported(f"activation {key!r} has no converter")
    return key, entry


def _configured_function(call: LayerCall, name):
    """The function the layer holds for config entry ``name``; None when it cannot be told."""
    for option, value in call.config.items():
        if option.endswith("activation") and activation_name(value) == activation_name(name):
            for owner in (call.layer, getattr(call.layer, "cell", None)):
                function = getattr(owner, option, None)
                if function is not None:
                    return function
    return None


def _is_layer(function) -> bool:
    import keras

    return isinstance(function, keras.layers.Layer)


def _layer_activation(call: LayerCall, layer) -> _Activation:
    """An activation layer object passed as ``activation=``, as a template of ``{x}``/``{dim}``."""
    kind = type(layer).__name__
    if kind == "ReLU":
        return _Activation(relu_expression(layer.negative_slope, layer.max_value, layer.threshold))
    if kind == "LeakyReLU":
        slope = float(layer.negative_slope)
        note = f"activation=LeakyReLU: slope {slope:g} (the layer's default is 0.3, torch's 0.01)."
        return _Activation(f"F.leaky_relu({{x}}, negative_slope={number(slope)})", note)
    if kind == "ELU":
        alpha = float(layer.alpha)
        return _Activation("F.elu({x})" if alpha == 1.0 else f"F.elu({{x}}, alpha={number(alpha)})")
    if kind == "Softmax":
        axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        if list(axis) != [-1]:
            raise call.unsupported(f"activation=Softmax(axis={layer.axis}): only the last axis is converted")
        return _Activation("F.softmax({x}, dim={dim})", _SOFTMAX_NOTE)
    if kind == "Activation":
        inner = layer.activation
        key = getattr(inner, "__name__", "")
        entry = _ACTIVATIONS.get(key)
        if entry is None or not _is_builtin(inner, key):
            raise call.unsupported(
                f"activation=Activation({key or inner!r}): not a keras.activations function"
            )
        return entry
    raise call.unsupported(
        f"activation={kind} layer object: only the weightless activation layers (ReLU, LeakyReLU, "
        "ELU, Softmax, Activation) convert as an activation= argument"
    )


def _is_builtin(function, key: str) -> bool:
    import keras

    try:
        return keras.activations.get(key) is function
    except ValueError:
        return False


def activation_steps(call: LayerCall, expr: str, name, dim: int, comment: str | None = None) -> Fragment:
    """The steps computing ``expr`` (a step expression, e.g. ``{m}({x})``) under activation ``name``.

    ``dim`` is the torch dim holding Keras's axis -1 (softmax, glu...). One step in general; two
    when the activation reads its input twice and ``expr`` is not the bare input (``{x}``); none
    for ``linear`` on the bare input. The notes and helpers the activation needs come with them.
    """
    key, entry = _lookup(call, name, dim)
    code = Fragment(notes=_notes(call, entry), helpers=dict(entry.sources))
    if entry.helper:
        code.helpers[entry.helper] = _helper_source(call, entry.helper)
    if entry.template == "{x}":
        code.steps = [] if expr == "{x}" else [Step(expr, comment)]
    elif entry.reads_input_twice and expr != "{x}":
        code.steps = [Step(expr, comment), Step(entry.template.format(x="{x}", dim=dim))]
    else:
        code.steps = [Step(entry.template.format(x=expr, dim=dim), comment)]
    return code


def _notes(call: LayerCall, entry: _Activation) -> list[str]:
    if entry.note is None or (entry.note == _SOFTMAX_NOTE and not call.is_model_output):
        return []  # the advice about logits only matters for the model's output
    return [entry.note]


# -- sparsemax ------------------------------------------------------------------------------------
_SPARSEMAX = '''
def sparsemax(x, dim):
    """Keras's sparsemax along ``dim``: max(x - tau, 0), with tau computed as Keras does."""
    z = torch.sort(x, dim=dim, descending=True).values
    cumsum = z.cumsum(dim)
    shape = [1] * x.dim()
    shape[dim] = -1
    r = torch.arange(1, x.shape[dim] + 1, dtype=x.dtype, device=x.device).view(shape)
    support = z - (cumsum - 1) / r > 0
    k = support.sum(dim=dim, keepdim=True)
{tau}
    return torch.clamp(x - tau, min=0.0)
'''
_TAU_KERAS_SUMS_CUMSUMS = """\
    # As this Keras version's sparsemax computes it (keras-team/keras#23425): from the sum of the
    # cumulative sums over the support. The paper's tau is (cumsum[k] - 1) / k; this form's output
    # does not sum to 1.
    tau = (torch.where(support, cumsum, 0.0).sum(dim=dim, keepdim=True) - 1) / k"""
_TAU_PAPER = """\
    # tau = (sum of the k largest values - 1) / k (Martins & Astudillo, 2016).
    tau = (torch.where(support, z, 0.0).sum(dim=dim, keepdim=True) - 1) / k"""


@functools.cache
def _keras_sparsemax_form() -> str:
    """Which threshold the installed Keras uses: probed once on a three-element input."""
    import keras

    out = np.asarray(keras.ops.convert_to_numpy(keras.activations.sparsemax(np.array([[0.0, 0.5, 1.0]]))))
    if np.allclose(out, [[0.0, 0.0, 0.25]]):
        return "sums_cumsums"
    if np.allclose(out, [[0.0, 0.25, 0.75]]):
        return "paper"
    return "unknown"


def _helper_source(call: LayerCall, name: str) -> str:
    if name == "sparsemax":
        form = _keras_sparsemax_form()
        if form == "unknown":
            raise call.unsupported("this Keras version's sparsemax matches no known formula")
        return _SPARSEMAX.replace("{tau}", _TAU_KERAS_SUMS_CUMSUMS if form == "sums_cumsums" else _TAU_PAPER)
    raise KeyError(name)


# -- layers ---------------------------------------------------------------------------------------
@converter("Activation", passthrough=True)
def convert_activation(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    code = activation_steps(call, "{x}", call.config["activation"], spec.torch_dim(-1))
    if spec.flat_order is not None and activation_name(call.config["activation"]) == "glu":
        raise call.unsupported("glu on a flatten whose order was folded into a Dense")
    return Converted.from_fragment(code, [same_layout(call)])


def relu_expression(negative_slope: float, max_value, threshold: float) -> str:
    """Keras's ``relu(x, negative_slope, max_value, threshold)`` as a torch expression of ``{x}``.

    Follows ``keras.activations.relu`` term by term: ``x`` where ``x > threshold`` (else 0),
    clipped to ``max_value``, minus ``negative_slope * relu(threshold - x)``.
    """
    slope, threshold = float(negative_slope), float(threshold)
    if slope and max_value is None and not threshold:
        return f"F.leaky_relu({{x}}, negative_slope={number(slope)})"
    if threshold:
        positive = f"F.threshold({{x}}, {number(threshold)}, 0.0)"  # x if x > threshold else 0
    elif max_value is not None and float(max_value) == 6.0:
        positive, max_value = "F.relu6({x})", None
    elif max_value is not None:
        positive, max_value = f"torch.clamp({{x}}, 0.0, {number(max_value)})", None
    else:
        positive = "F.relu({x})"
    if max_value is not None:
        positive = f"torch.clamp({positive}, 0.0, {number(max_value)})"
    if not slope:
        return positive
    negative = f"F.relu({number(threshold)} - {{x}})" if threshold else "F.relu(-{x})"
    return f"{positive} - {number(slope)} * {negative}"


@converter("ReLU", passthrough=True)
def convert_relu(call: LayerCall) -> Converted:
    layer = call.layer
    expr = relu_expression(layer.negative_slope, layer.max_value, layer.threshold)
    notes = []
    if "threshold" in expr and float(layer.threshold):
        threshold = float(layer.threshold)
        notes.append(f"Keras ReLU(threshold={threshold:g}) keeps x only where x > {threshold:g}, else 0.")
    return Converted([Step(expr)], [same_layout(call)], notes=notes)


@converter("LeakyReLU", passthrough=True)
def convert_leaky_relu(call: LayerCall) -> Converted:
    slope = float(call.layer.negative_slope)
    comment = (
        "Keras's LeakyReLU slope (layer default 0.3; torch's default is 0.01)" if slope != 0.01 else None
    )
    step = Step(f"F.leaky_relu({{x}}, negative_slope={number(slope)})", comment)
    return Converted([step], [same_layout(call)])


@converter("ELU", passthrough=True)
def convert_elu(call: LayerCall) -> Converted:
    alpha = float(call.layer.alpha)
    expr = "F.elu({x})" if alpha == 1.0 else f"F.elu({{x}}, alpha={number(alpha)})"
    return Converted([Step(expr)], [same_layout(call)])


@converter("Softmax", passthrough=True)
def convert_softmax(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    if has_keras_mask(call):
        raise call.unsupported("its input carries a Keras mask (masked softmax is not converted)")
    axis = call.layer.axis  # keras.ops.softmax calls (class Softmax too) carry an axis as well
    if axis is None:  # keras.ops.softmax(x, axis=None): over every axis, batch included
        raise call.unsupported("softmax over all axes at once (axis=None)")
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    dims = sorted(spec.torch_dim(int(a)) for a in axes)
    if len(dims) == 1:
        step = Step(f"F.softmax({{x}}, dim={dims[0]})")
    else:
        # Keras normalises over several axes at once: exp(x - logsumexp(x, axes)).
        dim_tuple = int_or_tuple(dims)
        step = Step(
            f"torch.exp({{x}} - torch.logsumexp({{x}}, dim={dim_tuple}, keepdim=True))",
            "softmax over several axes at once, as Keras computes it",
        )
    return Converted([step], [same_layout(call)], notes=[_SOFTMAX_NOTE] if call.is_model_output else [])


@converter("PReLU", passthrough=True)
def convert_prelu(call: LayerCall) -> Converted:
    from .. import initializers

    spec = call.inputs[0]
    alpha = np.asarray(call.weights["alpha"])  # Keras shape: input shape without batch, 1 on shared axes
    # Lay alpha out like the torch tensor (the batch axis excluded).
    alpha_t = np.ascontiguousarray(np.transpose(alpha, [p - 1 for p in spec.perm[1:]]))
    if spec.flat_order is not None:  # after a folded Flatten: the features are in torch's order
        alpha_t = alpha_t[spec.flat_order] if alpha_t.size > 1 else alpha_t
    init_config = call.config.get("alpha_initializer")
    if alpha_t.size == 1 or (alpha_t.ndim >= 1 and all(d == 1 for d in alpha_t.shape[1:])):
        # Shared over every axis but the one at torch dim 1: exactly nn.PReLU (one slope per channel).
        count = alpha_t.size
        weight = alpha_t.reshape(count)
        init = initializers.init_lines(init_config, alpha.shape, weight.shape, "weight")
        ctor = "nn.PReLU()" if count == 1 else f"nn.PReLU({count})"
        what = "alpha shared over every axis: one slope" if count == 1 else "one slope per channel"
        module = Submodule(ctor, {"weight": weight}, init, f"Keras PReLU, {what}.")
        return Converted([Step("{m}({x})")], [same_layout(call)], {"": module})
    # One slope per element of alpha (not per channel): nn.PReLU cannot hold it.
    shape = size_args(alpha_t.shape)
    ctor = f'nn.ParameterDict({{"alpha": nn.Parameter(torch.zeros({shape}))}})'
    init = initializers.init_lines(init_config, alpha.shape, alpha_t.shape, "alpha")
    module = Submodule(
        ctor,
        {"alpha": alpha_t},
        init,
        "Keras PReLU with a slope per element of a (" + shape + ") tensor, not per channel: "
        "no nn.PReLU twin, so the parameter and formula are explicit.",
    )
    step = Step("F.relu({x}) - {m}.alpha * F.relu(-{x})")
    return Converted([step], [same_layout(call)], {"": module})
