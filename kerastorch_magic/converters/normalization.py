"""Normalisation layers: BatchNormalization, LayerNormalization, GroupNormalization,
RMSNormalization, UnitNormalization (DESIGN.md §5.6, §5.10)."""

from __future__ import annotations

import numpy as np

from .. import initializers, layout
from ..ir import TensorSpec
from ..registry import Converted, LayerCall, Step, Submodule, converter
from ._source import int_or_tuple, number


def _initializer_name(config) -> str:
    if isinstance(config, str):
        return config.lower().replace("_", "")
    if isinstance(config, dict):
        return str(config.get("class_name", "")).lower().replace("_", "")
    return ""


def _affine_init(
    call: LayerCall, shape: tuple, learn_scale: bool, learn_center: bool, has_weight: bool, has_bias: bool
) -> list[str]:
    """``reset_parameters`` lines for a norm layer's weight/bias as Keras initialises gamma/beta.

    A parameter torch has but Keras does not learn (``scale=False`` or ``center=False`` with the
    other one on) is fixed at 1 (weight) or 0 (bias) and frozen with ``requires_grad_(False)``.
    """
    lines: list[str] = []
    for present, learned, name, keras_name, option, fill in (
        (has_weight, learn_scale, "weight", "gamma", "scale", "ones"),
        (has_bias, learn_center, "bias", "beta", "center", "zeros"),
    ):
        if not present:
            continue
        if learned:
            initializer = call.config.get(f"{keras_name}_initializer", fill)
            lines += initializers.init_lines(initializer, shape, shape, name)
        else:
            lines += [
                f"nn.init.{fill}_({{m}}.{name})",
                f"# Keras {option}=False: {keras_name} is not learned",
                f"{{m}}.{name}.requires_grad_(False)",
            ]
    return lines


def _default_affine(call: LayerCall) -> bool:
    """Whether gamma/beta use Keras's default initialisers (ones/zeros: torch's defaults too)."""
    config = call.config
    return _initializer_name(config.get("gamma_initializer", "ones")) in {"ones", ""} and _initializer_name(
        config.get("beta_initializer", "zeros")
    ) in {"zeros", ""}


def _frozen_note(learn_scale: bool, learn_center: bool) -> list[str]:
    if learn_scale == learn_center:
        return []
    fixed = "beta (bias) at 0" if learn_scale else "gamma (weight) at 1"
    return [
        f"Keras learns only {'gamma' if learn_scale else 'beta'}: {fixed} is frozen (requires_grad False)."
    ]


# -- BatchNormalization ------------------------------------------------------------------------


@converter("BatchNormalization", passthrough=True)
def convert_batch_norm(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    spec = call.inputs[0]
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) else axis
    kind = {2: 1, 3: 1, 4: 2, 5: 3}.get(spec.rank)
    if kind is None:
        raise call.unsupported(f"BatchNormalization on a rank-{spec.rank} tensor")
    steps = []
    perm = spec.perm
    if spec.torch_dim(axis) != 1:  # torch normalises dim 1: bring the Keras axis there
        perm = layout.axis_first(spec.rank, axis)
        steps = call.relayout(perm)
    mean, var = weights["moving_mean"], weights["moving_variance"]
    channels = mean.shape[0]
    eps, momentum = float(config.get("epsilon", 1e-3)), float(config.get("momentum", 0.99))
    args = [str(channels), f"eps={number(eps)}", f"momentum={1 - momentum:.6g}"]
    center, scale = bool(config.get("center", True)), bool(config.get("scale", True))
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
        f"Keras BatchNormalization: eps={number(eps)} (torch default 1e-5), momentum {momentum:g} is "
        f"torch's {1 - momentum:.6g} (torch weighs the new batch, Keras the running value)."
    ]
    notes += _frozen_note(scale, center)
    stats_default = _initializer_name(config.get("moving_mean_initializer", "zeros")) in {
        "zeros",
        "",
    } and _initializer_name(config.get("moving_variance_initializer", "ones")) in {"ones", ""}
    if stats_default and _default_affine(call) and center == scale:
        init = ["{m}.reset_parameters()"]
    else:
        init = (
            ["{m}.reset_running_stats()"]
            if stats_default
            else initializers.init_lines(
                config.get("moving_mean_initializer"), (channels,), (channels,), "running_mean"
            )
            + initializers.init_lines(
                config.get("moving_variance_initializer"), (channels,), (channels,), "running_var"
            )
        )
        init += _affine_init(call, (channels,), scale, center, affine, affine)
    ctor = f"nn.BatchNorm{kind}d({', '.join(args)})"
    return Converted(
        [*steps, Step("{m}({x})")],
        [call.output_spec(perm)],
        {"": Submodule(ctor, state, init)},
        notes,
    )


# -- LayerNormalization / RMSNormalization -----------------------------------------------------


def _axes(call: LayerCall, value) -> list[int]:
    """Keras ``axis`` (int or list) as sorted non-negative axes of the input."""
    rank = call.inputs[0].rank
    values = value if isinstance(value, (list, tuple)) else [value]
    axes = sorted({int(a) % rank for a in values})
    if 0 in axes:
        raise call.unsupported("normalising over the batch axis")
    return axes


def _trailing_layout(call: LayerCall, axes: list[int]) -> tuple[tuple[int, ...], list[Step], list[int]]:
    """A torch layout with the normalised Keras ``axes`` as the trailing dimensions.

    torch's LayerNorm/RMSNorm normalise the last dimensions. If the input already holds the axes
    last (in any order: mean and variance do not care) it is used as is; otherwise it is permuted
    with the axes last in Keras order. Returns (layout, re-layout steps, the axes in torch order).
    """
    spec = call.inputs[0]
    tail = spec.perm[spec.rank - len(axes) :]
    if set(tail) == set(axes):
        return spec.perm, [], list(tail)
    wanted = tuple(p for p in spec.perm if p not in axes) + tuple(axes)
    steps = call.relayout(wanted)
    what = "the channels" if len(axes) == 1 else "its axes"
    steps[-1].comment = f"{call.class_name} normalises {what}: torch's version wants them last"
    return wanted, steps, list(axes)


def _gamma_to_torch(array: np.ndarray, axes: list[int], torch_axes: list[int]) -> np.ndarray:
    """A per-element parameter over Keras ``axes`` (Keras order) re-laid in ``torch_axes`` order."""
    if array.ndim != len(axes):
        array = array.reshape([d for d in array.shape if d != 1] or [1])
    return np.ascontiguousarray(np.transpose(array, [axes.index(a) for a in torch_axes]))


def _back_to(call: LayerCall, current: tuple[int, ...]) -> list[Step]:
    """At a model output, return to the input's layout (the user asked for that format)."""
    spec = call.inputs[0]
    if not call.is_model_output or current == spec.perm:
        return []
    expr = layout.permute_expression("{x}", current, spec.perm)
    return [Step(expr, f"back to {layout.describe(spec.perm)}")]


@converter("LayerNormalization", passthrough=True)
def convert_layer_norm(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    spec = call.inputs[0]
    if config.get("rms_scaling"):
        raise call.unsupported(
            "rms_scaling=True (deprecated in Keras: it scales by the variance, not the root mean "
            "square); use keras.layers.RMSNormalization"
        )
    axes = _axes(call, config.get("axis", -1))
    perm, steps, torch_axes = _trailing_layout(call, axes)
    shape = tuple(int(spec.keras_shape[a]) for a in torch_axes)
    eps = float(config.get("epsilon", 1e-3))
    center, scale = bool(config.get("center", True)), bool(config.get("scale", True))
    args = [int_or_tuple(shape), f"eps={number(eps)}"]
    state: dict[str, np.ndarray] = {}
    has_weight = has_bias = False
    if not center and not scale:
        args.append("elementwise_affine=False")
    else:
        has_weight = True  # nn.LayerNorm has no weight-less form with a bias
        has_bias = center
        if not center:
            args.append("bias=False")
        state["weight"] = (
            _gamma_to_torch(weights["gamma"], axes, torch_axes) if scale else np.ones(shape, np.float32)
        )
        if center:
            state["bias"] = _gamma_to_torch(weights["beta"], axes, torch_axes)
    notes = [f"Keras LayerNormalization: eps={number(eps)} (torch default 1e-5)."]
    if len(axes) == 1 and spec.rank > 2 and axes[0] == spec.rank - 1:
        notes[0] += " It normalises each position over the channels only (not GroupNorm)."
    notes += _frozen_note(scale, center) if (center or scale) else []
    if has_weight and _default_affine(call) and center and scale:
        init = ["{m}.reset_parameters()"]
    else:
        init = _affine_init(call, shape, scale, center, has_weight, has_bias)
    ctor = f"nn.LayerNorm({', '.join(args)})"
    steps = [*steps, Step("{m}({x})"), *_back_to(call, perm)]
    out = spec.perm if call.is_model_output else perm
    return Converted(steps, [call.output_spec(out)], {"": Submodule(ctor, state, init)}, notes)


@converter("RMSNormalization", passthrough=True)
def convert_rms_norm(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    spec = call.inputs[0]
    axes = _axes(call, config.get("axis", -1))
    perm, steps, torch_axes = _trailing_layout(call, axes)
    shape = tuple(int(spec.keras_shape[a]) for a in torch_axes)
    eps = float(config.get("epsilon", 1e-6))
    state = {"weight": _gamma_to_torch(weights["scale"], axes, torch_axes)}
    ctor = f"nn.RMSNorm({int_or_tuple(shape)}, eps={number(eps)})"
    notes = [f"Keras RMSNormalization: x / sqrt(mean(x^2) + {number(eps)}) * scale (nn.RMSNorm: torch>=2.4)."]
    steps = [*steps, Step("{m}({x})"), *_back_to(call, perm)]
    out = spec.perm if call.is_model_output else perm
    init = ["{m}.reset_parameters()"]
    return Converted(steps, [call.output_spec(out)], {"": Submodule(ctor, state, init)}, notes)


# -- GroupNormalization ------------------------------------------------------------------------


@converter("GroupNormalization", passthrough=True)
def convert_group_norm(call: LayerCall) -> Converted:
    config, weights = call.config, call.weights
    spec = call.inputs[0]
    axis = int(config.get("axis", -1)) % spec.rank
    if spec.rank < 2 or axis == 0:
        raise call.unsupported(f"GroupNormalization over axis {axis} of a rank-{spec.rank} tensor")
    channels = int(spec.keras_shape[axis])
    groups = int(config.get("groups", 32))
    groups = channels if groups == -1 else groups
    steps: list[Step] = []
    perm = spec.perm
    if spec.torch_dim(axis) != 1:  # nn.GroupNorm groups dim 1
        perm = layout.axis_first(spec.rank, axis)
        steps = call.relayout(perm)
    eps = float(config.get("epsilon", 1e-3))
    center, scale = bool(config.get("center", True)), bool(config.get("scale", True))
    affine = center or scale
    args = [str(groups), str(channels), f"eps={number(eps)}"]
    state: dict[str, np.ndarray] = {}
    if not affine:
        args.append("affine=False")
    else:
        state["weight"] = weights["gamma"] if scale else np.ones(channels, np.float32)
        state["bias"] = weights["beta"] if center else np.zeros(channels, np.float32)
    notes = [
        f"Keras GroupNormalization: {groups} groups of consecutive channels, eps={number(eps)} "
        "(torch default 1e-5)."
    ]
    notes += _frozen_note(scale, center)
    if affine and _default_affine(call) and center and scale:
        init = ["{m}.reset_parameters()"]
    else:
        init = _affine_init(call, (channels,), scale, center, affine, affine)
    ctor = f"nn.GroupNorm({', '.join(args)})"
    return Converted(
        [*steps, Step("{m}({x})")], [call.output_spec(perm)], {"": Submodule(ctor, state, init)}, notes
    )


# -- UnitNormalization -------------------------------------------------------------------------


@converter("UnitNormalization", passthrough=True)
def convert_unit_norm(call: LayerCall) -> Converted:
    spec: TensorSpec = call.inputs[0]
    axes = _axes(call, call.config.get("axis", -1))
    dims = [spec.torch_dim(a) for a in axes]
    dim = int_or_tuple(sorted(dims))
    # Keras: x * min(1 / ||x||, 1e12), i.e. x / max(||x||, 1e-12): F.normalize's definition.
    step = Step(f"F.normalize({{x}}, dim={dim}, eps=1e-12)", "Keras UnitNormalization: L2 norm, eps 1e-12")
    return Converted([step], [call.output_spec(spec.perm)])
