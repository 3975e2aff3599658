"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector, ZeroPadding/Cropping/UpSampling 1D-3D.

Flatten, Reshape and Permute speak Keras's (channels-last) order: their input is brought to it (or,
for Flatten before a Dense, the order is folded into the Dense's weights; for Permute, the layout
bookkeeping often absorbs the permutation). Padding, cropping and UpSampling1D act on whichever
torch dimensions hold the spatial axes, so they never permute; UpSampling2D/3D work channels-first.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import layout, registry
from ..registry import Converted, LayerCall, Step, converter
from ._source import compact
from .padding import tuple_of

# Layers a folded flatten order may pass through on its way to the Dense that absorbs it: their
# converters (core.py) hand the input spec, flat_order included, to their output.
_ORDER_TRANSPARENT = {
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
}


# -- Flatten -----------------------------------------------------------------------------------------
def _folds_into_dense(call: LayerCall) -> bool:
    """Whether every reader of the flatten is a Dense called once, directly or through dropouts."""
    readers = call.final_readers(lambda node: node.class_name in _ORDER_TRANSPARENT)
    return readers is not None and all(
        reader.class_name == "Dense" and len(reader.layer._inbound_nodes) == 1 for reader in readers
    )


@converter("Flatten")
def convert_flatten(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    out = call.output_spec(layout.identity(2))
    if spec.rank == 1:  # Keras gives (batch, 1)
        return Converted([Step("{x}.unsqueeze(1)")], [out])
    if spec.rank == 2:  # nothing to flatten: the tensor, folded order included, passes as it is
        return Converted([], [replace(spec, keras_shape=out.keras_shape)])
    # The layout whose flatten Keras computes: channels-first data is moved to channels-last first.
    keras_order = layout.identity(spec.rank)
    if call.config.get("data_format", "channels_last") == "channels_first":
        keras_order = (0, *range(2, spec.rank), 1)
    if _same_element_order(spec, keras_order):
        return Converted([Step("torch.flatten({x}, 1)")], [out])
    if spec.flat_order is None and None not in spec.keras_shape[1:] and _folds_into_dense(call):
        # torch flattens its own (permuted) order; record which Keras element each column holds.
        keras_shape = tuple(int(d) for d in spec.keras_shape[1:])
        flat = np.arange(int(np.prod(keras_shape))).reshape([keras_shape[a - 1] for a in keras_order[1:]])
        flat = np.transpose(flat, np.argsort([a - 1 for a in keras_order[1:]]))  # Keras-indexed
        order = np.transpose(flat, [p - 1 for p in spec.perm[1:]]).reshape(-1)
        return Converted([Step("torch.flatten({x}, 1)")], [replace(out, flat_order=order)])
    steps = call.relayout(keras_order)
    steps[-1].comment = "Keras flattens in channels-last order"
    steps.append(Step("torch.flatten({x}, 1)"))
    return Converted(steps, [out])


# -- Reshape, Permute, RepeatVector -------------------------------------------------------------------
@converter("Reshape")
def convert_reshape(call: LayerCall) -> Converted:
    steps = _to_keras_layout(call, "Keras reshapes in channels-last order")
    shape = call.output_shapes[0][1:]
    if None in shape:  # unknown sizes: Keras's own target (it holds at most one -1)
        dims = ", ".join(str(int(d)) for d in call.config["target_shape"])
        steps.append(Step(f"{{x}}.reshape({{x}}.shape[0], {dims})"))
    else:
        steps.append(Step(f"{{x}}.reshape(-1, {', '.join(str(int(d)) for d in shape)})"))
    perm = layout.identity(len(shape) + 1)
    if _feeds_channels_first(call):
        cf = layout.channels_first(len(perm))
        steps.append(Step(layout.permute_expression("{x}", perm, cf), "channels-first for what follows"))
        perm = cf
    return Converted(steps, [call.output_spec(perm)])


@converter("Permute")
def convert_permute(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    _refuse_folded_order(call)
    keras_perm = (0, *(int(d) for d in call.config["dims"]))
    # Keras output = input.transpose(keras_perm); the torch tensor as it stands already holds that
    # output, laid out as `relabelled`. If the rest of the model speaks that layout, nothing moves.
    relabelled = tuple(keras_perm.index(axis) for axis in spec.perm)
    cf = layout.channels_first(spec.rank)
    if relabelled in (layout.identity(spec.rank), cf):
        return Converted([], [call.output_spec(relabelled)])
    wanted = cf if _feeds_channels_first(call) else layout.identity(spec.rank)
    expr = layout.permute_expression("{x}", relabelled, wanted)
    comment = None
    if not layout.is_identity(spec.perm) or wanted != layout.identity(spec.rank):
        source, target = layout.describe(spec.perm), layout.describe(wanted)
        verb = "stays" if source == target else "is"
        comment = f"Keras's Permute({keras_perm[1:]}) on a {source} tensor; the result {verb} {target}"
    return Converted([Step(expr, comment)], [call.output_spec(wanted)])


@converter("RepeatVector")
def convert_repeat_vector(call: LayerCall) -> Converted:
    steps = call.relayout(layout.identity(2))
    n = int(call.config["n"])
    if _feeds_channels_first(call):  # (N, features, n): the channels-first form of Keras's (N, n, features)
        steps.append(Step(f"{{x}}.unsqueeze(2).repeat(1, 1, {n})"))
        return Converted(steps, [call.output_spec(layout.channels_first(3))])
    steps.append(Step(f"{{x}}.unsqueeze(1).repeat(1, {n}, 1)"))
    return Converted(steps, [call.output_spec(layout.identity(3))])


def _refuse_folded_order(call: LayerCall) -> None:
    spec = call.inputs[0]
    call.input_as(0, spec.perm)  # raises when the input is a flatten whose order was folded


def _to_keras_layout(call: LayerCall, why: str) -> list[Step]:
    if _same_element_order(call.inputs[0], layout.identity(call.inputs[0].rank)):
        return []
    steps = call.relayout(layout.identity(call.inputs[0].rank))
    if steps:
        steps[-1].comment = why
    return steps


def _same_element_order(spec, order: tuple[int, ...]) -> bool:
    """Whether the tensor, laid out as it is, lists its elements in the order of layout ``order``.

    True when the layouts agree, and also when they differ only in where axes of size 1 sit: a
    (N, C, 1, 1) channels-first map flattens as its (N, 1, 1, C) Keras twin does, so a hand port
    writes ``torch.flatten(x, 1)`` with no permute before it.
    """
    if spec.perm == order:
        return True
    if spec.flat_order is not None or None in spec.keras_shape[1:]:
        return False

    def longer_axes(perm):
        return [axis for axis in perm[1:] if spec.keras_shape[axis] != 1]

    return longer_axes(spec.perm) == longer_axes(order)


def _feeds_channels_first(call: LayerCall) -> bool:
    """Whether every reader of the (rank >= 3) output computes channels-first on channels-last
    Keras data, looking through layout-agnostic layers: then the output is best laid out
    channels-first straight away."""
    if len(call.output_shapes[0]) < 3:
        return False

    def converter_of(node):
        return registry.find(node.class_name)

    def agnostic(node) -> bool:
        function = converter_of(node)
        return getattr(function, "passthrough", False) and not getattr(function, "channels_first", False)

    readers = call.final_readers(agnostic)
    return readers is not None and all(
        getattr(converter_of(node), "channels_first", False)
        and node.layer.get_config().get("data_format", "channels_last") != "channels_first"
        for node in readers
    )


# -- ZeroPadding, Cropping ---------------------------------------------------------------------------
def _spatial_axes(call: LayerCall) -> list[int]:
    """Keras axes of the spatial dimensions, in order."""
    rank = call.inputs[0].rank
    if call.config.get("data_format", "channels_last") == "channels_first":
        return list(range(2, rank))
    return list(range(1, rank - 1))


def _pairs(value, count: int) -> list[tuple[int, int]]:
    """Keras's padding/cropping argument as ``count`` (before, after) pairs."""
    if isinstance(value, int):
        return [(value, value)] * count
    value = list(value)
    if count == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        return [(int(value[0]), int(value[1]))]
    return [tuple_of(v, 2) for v in value]


def _by_torch_dim(call: LayerCall, key: str) -> dict[int, tuple[int, int]]:
    spec = call.inputs[0]
    _refuse_folded_order(call)
    axes = _spatial_axes(call)
    pairs = _pairs(call.config[key], len(axes))
    return {spec.torch_dim(axis): pair for axis, pair in zip(axes, pairs) if any(pair)}


@converter("ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", passthrough=True)
def convert_zero_padding(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    pads = _by_torch_dim(call, "padding")
    out = call.output_spec(spec.perm)
    if not pads:
        return Converted([], [out])
    flat: list[int] = []
    for dim in range(spec.rank - 1, min(pads) - 1, -1):  # F.pad: last dimension first
        flat += pads.get(dim, (0, 0))
    comment = None
    if len(_spatial_axes(call)) > 1 and len(set(flat)) > 1:
        keras_pairs = ", ".join(str(p) for p in _pairs(call.config["padding"], len(_spatial_axes(call))))
        comment = f"Keras pads ({keras_pairs}) per axis; F.pad lists the last dimension first"
    elif spec.rank - 1 not in pads and len(set(flat)) > 1:
        comment = "F.pad lists the last dimension first: the zeros leave the channels alone"
    return Converted([Step(f"F.pad({{x}}, ({', '.join(str(v) for v in flat)}))", comment)], [out])


@converter("Cropping1D", "Cropping2D", "Cropping3D", passthrough=True)
def convert_cropping(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    crops = _by_torch_dim(call, "cropping")
    out = call.output_spec(spec.perm)
    if not crops:
        return Converted([], [out])
    index = []
    for dim in range(max(crops) + 1):
        before, after = crops.get(dim, (0, 0))
        index.append(f"{before or ''}:{-after if after else ''}")
    return Converted([Step(f"{{x}}[{', '.join(index)}]")], [out])


# -- UpSampling --------------------------------------------------------------------------------------
@converter("UpSampling1D", passthrough=True)
def convert_up_sampling1d(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    size = int(call.config["size"])
    _refuse_folded_order(call)
    expr = f"{{x}}.repeat_interleave({size}, dim={spec.torch_dim(1)})"
    return Converted([Step(expr)], [call.output_spec(spec.perm)])


@converter("UpSampling2D", "UpSampling3D", channels_first=True)
def convert_up_sampling(call: LayerCall) -> Converted:
    rank = call.inputs[0].rank - 2
    size = tuple_of(call.config["size"], rank)
    interpolation = call.config.get("interpolation", "nearest")
    if interpolation not in ("nearest", "bilinear"):
        why = {
            "bicubic": "TF's bicubic kernel (a=-0.5) differs from torch's (a=-0.75)",
            "area": "TF's area resize has no torch twin",
        }.get(interpolation, "torch has no such resize")
        raise call.unsupported(f"interpolation={interpolation!r}: {why}; use 'nearest' or 'bilinear'")
    cf = call.channels_first_perm()
    steps = call.relayout(cf)
    out = call.output_spec(cf)
    if interpolation == "bilinear":
        expr = f'F.interpolate({{x}}, scale_factor={compact(size)}, mode="bilinear", align_corners=False)'
        steps.append(Step(expr))
    elif all(s & (s - 1) == 0 for s in size):  # powers of two: torch's float index maths is exact
        steps.append(Step(f'F.interpolate({{x}}, scale_factor={compact(size)}, mode="nearest")'))
    else:  # as Keras does it: F.interpolate's "nearest" can be off by one at other factors
        expr = "{x}"
        for dim, factor in enumerate(size, start=2):
            if factor != 1:
                expr += f".repeat_interleave({factor}, dim={dim})"
        steps.append(Step(expr))
    return Converted(steps, [out])
