"""Merging layers: Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot.

Inputs may arrive in different torch layouts (one from a channels-first convolution, one straight
from a Dense); each is re-laid to the layout most of them already have. Keras merges inputs of
lower rank by inserting unit axes after the batch axis (``(N, C)`` with ``(N, H, W, C)`` is
``(N, 1, 1, C)``); the generated code inserts them with ``None`` indexing.
"""

from __future__ import annotations

from .. import layout
from ..registry import Converted, LayerCall, Step, converter
from ._common import common_perm, has_keras_mask


def _operand(call: LayerCall, index: int, perm: tuple[int, ...]) -> str:
    """Input ``index`` laid out as ``perm``, unit axes inserted where Keras broadcasts a lower rank."""
    spec = call.inputs[index]
    missing = len(perm) - spec.rank
    if missing == 0:
        return call.input_as(index, perm)
    # Keras expands the input at axis 1 ``missing`` times: padded axis a is the input's a - missing.
    order, parts = [], []
    for axis in perm:
        if 1 <= axis <= missing:
            parts.append("None")
        else:
            order.append(0 if axis == 0 else axis - missing)
            parts.append(":")
    while parts[-1] == ":":
        parts.pop()
    return f"{call.input_as(index, tuple(order))}[{', '.join(parts)}]"


def _operands(call: LayerCall) -> tuple[list[str], tuple[int, ...]]:
    perm = common_perm(call.inputs)
    return [_operand(call, i, perm) for i in range(len(call.inputs))], perm


def _refuse_masks(call: LayerCall) -> None:
    """Multiply, Maximum and Minimum treat masked positions specially in Keras."""
    if any(has_keras_mask(call, i) for i in range(len(call.inputs))):
        raise call.unsupported("its inputs carry a Keras mask, which changes this merge's values")


def _merged(call: LayerCall, expr: str, perm: tuple[int, ...], comment: str | None = None) -> Converted:
    return Converted([Step(expr, comment)], [call.output_spec(perm)])


def _alike(call: LayerCall) -> bool:
    """Every input has the output's shape and dtype: the sum may be computed into one of them.

    Only the batch axis may be unknown (one batch runs through the model); an unknown length
    elsewhere could broadcast a size-1 operand at run time, which an in-place add cannot hold.
    """
    value = call.node.outputs[0]
    shape = tuple(value.shape)
    return None not in shape[1:] and all(
        spec.keras_shape == shape and spec.dtype == value.dtype for spec in call.inputs
    )


@converter("Add", passthrough=True)
def convert_add(call: LayerCall) -> Converted:
    terms, perm = _operands(call)
    return Converted([Step(" + ".join(terms), alike=_alike(call))], [call.output_spec(perm)])


@converter("Subtract", passthrough=True)
def convert_subtract(call: LayerCall) -> Converted:
    terms, perm = _operands(call)
    if len(terms) != 2:
        raise call.unsupported(f"Subtract of {len(terms)} inputs")
    return _merged(call, f"{terms[0]} - {terms[1]}", perm)


@converter("Multiply", passthrough=True)
def convert_multiply(call: LayerCall) -> Converted:
    _refuse_masks(call)
    terms, perm = _operands(call)
    return _merged(call, " * ".join(terms), perm)


@converter("Average", passthrough=True)
def convert_average(call: LayerCall) -> Converted:
    terms, perm = _operands(call)
    if len(terms) == 1:
        return _merged(call, terms[0], perm)
    return _merged(call, f"({' + '.join(terms)}) / {len(terms)}", perm)


@converter("Maximum", "Minimum", passthrough=True)
def convert_maximum(call: LayerCall) -> Converted:
    _refuse_masks(call)
    terms, perm = _operands(call)
    function = "torch.maximum" if call.class_name == "Maximum" else "torch.minimum"
    expr = terms[0]
    for term in terms[1:]:  # pairwise, in Keras's order
        expr = f"{function}({expr}, {term})"
    return _merged(call, expr, perm)


@converter("Concatenate", passthrough=True)
def convert_concatenate(call: LayerCall) -> Converted:
    terms, perm = _operands(call)
    if any(spec.rank != len(perm) for spec in call.inputs):
        raise call.unsupported("inputs of different ranks")
    if len(terms) == 1:
        return Converted([], [call.output_spec(perm)])
    axis = int(call.layer.axis)
    dim = perm.index(axis % len(perm))
    comment = None
    if axis % len(perm) != dim:
        comment = f"Keras axis {axis} is torch dim {dim} in the {layout.describe(perm)} layout"
    return _merged(call, f"torch.cat([{', '.join(terms)}], dim={dim})", perm, comment)


_LETTERS = "abcdefghijlmopqrstuvwxyz"  # einsum subscripts: n = batch, k = the summed axis


@converter("Dot")
def convert_dot(call: LayerCall) -> Converted:
    """Batch dot product: one ``torch.einsum`` reading each input in its own torch layout."""
    if len(call.inputs) != 2:
        raise call.unsupported(f"Dot of {len(call.inputs)} inputs")
    first, second = call.inputs
    axes = call.layer.axes
    axes = (axes, axes) if isinstance(axes, int) else tuple(axes)
    axes = (axes[0] % first.rank, axes[1] % second.rank)
    if 0 in axes:
        raise call.unsupported("a dot product over the batch axis")
    operands = [call.input_as(0, first.perm), call.input_as(1, second.perm)]
    if call.layer.normalize:
        # Keras L2-normalises with its epsilon 1e-7: x / max(||x||, 1e-7).
        operands = [
            f"F.normalize({operand}, dim={spec.torch_dim(axis)}, eps=1e-07)"
            for operand, spec, axis in zip(operands, (first, second), axes)
        ]
    out_rank = first.rank + second.rank - 3
    if first.rank == 2 and second.rank == 2:  # (N, D) . (N, D) -> (N, 1)
        expr = f"torch.sum({operands[0]} * {operands[1]}, dim=1, keepdim=True)"
        return _merged(call, expr, layout.identity(2))
    # Subscripts in Keras's axis order, then read through each input's torch layout.
    letters = iter(_LETTERS)
    keras_first = ["n" if a == 0 else "k" if a == axes[0] else next(letters) for a in range(first.rank)]
    keras_second = ["n" if a == 0 else "k" if a == axes[1] else next(letters) for a in range(second.rank)]
    output = [s for s in keras_first if s != "k"] + [s for s in keras_second if s not in "nk"]
    assert len(output) == out_rank
    subscripts = (
        "".join(keras_first[a] for a in first.perm) + "," + "".join(keras_second[a] for a in second.perm)
    )
    expr = f'torch.einsum("{subscripts}->{"".join(output)}", {operands[0]}, {operands[1]})'
    return _merged(call, expr, layout.identity(out_rank))
