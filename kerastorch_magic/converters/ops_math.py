"""keras.ops element-wise operations: arithmetic, comparisons, logic, math functions, where, cast, clip.

They keep their inputs' layout (NumPy broadcasting across layouts: :func:`ops_common.broadcast`),
so a channels-first tensor stays channels-first through ``x * ops.sigmoid(x)``. Python operators
keep Keras's semantics in torch: ``/`` is true division (ints give floats in both), ``//`` floors
and ``%`` takes the divisor's sign (NumPy's and torch's ``remainder``).
"""

from __future__ import annotations

from ..registry import Converted, LayerCall, Step, converter
from ._common import same_layout
from .ops_common import (
    arguments,
    broadcast,
    is_float,
    parenthesised,
    result,
    tensor_index,
    torch_dtype,
)

# keras.ops Operation -> Python operator between torch tensors (and numbers).
_OPERATORS = {
    "Add": "+",
    "Subtract": "-",
    "Multiply": "*",
    "Divide": "/",
    "TrueDivide": "/",
    "FloorDivide": "//",
    "Mod": "%",
    "Power": "**",
    "Equal": "==",
    "NotEqual": "!=",
    "Greater": ">",
    "GreaterEqual": ">=",
    "Less": "<",
    "LessEqual": "<=",
}

# keras.ops Operation -> torch function of two tensors.
_FUNCTIONS = {
    "LogicalAnd": "torch.logical_and",
    "LogicalOr": "torch.logical_or",
    "LogicalXor": "torch.logical_xor",
    "Arctan2": "torch.atan2",
    "Hypot": "torch.hypot",
    "Logaddexp": "torch.logaddexp",
    "Maximum": "torch.maximum",
    "Minimum": "torch.minimum",
}

# keras.ops Operation -> torch expression of one tensor ``{x}``.
_UNARY = {
    "Negative": "-{x}",
    "Absolute": "torch.abs({x})",
    "Square": "torch.square({x})",
    "Sqrt": "torch.sqrt({x})",
    "Rsqrt": "torch.rsqrt({x})",
    "Reciprocal": "torch.reciprocal({x})",
    "Exp": "torch.exp({x})",
    "Exp2": "torch.exp2({x})",
    "Expm1": "torch.expm1({x})",
    "Log": "torch.log({x})",
    "Log1p": "torch.log1p({x})",
    "Log2": "torch.log2({x})",
    "Log10": "torch.log10({x})",
    "Sin": "torch.sin({x})",
    "Cos": "torch.cos({x})",
    "Tan": "torch.tan({x})",
    "Arcsin": "torch.asin({x})",
    "Arccos": "torch.acos({x})",
    "Arctan": "torch.atan({x})",
    "Sinh": "torch.sinh({x})",
    "Cosh": "torch.cosh({x})",
    "Tanh": "torch.tanh({x})",
    "Arcsinh": "torch.asinh({x})",
    "Arccosh": "torch.acosh({x})",
    "Arctanh": "torch.atanh({x})",
    "Floor": "torch.floor({x})",
    "Ceil": "torch.ceil({x})",
    "Trunc": "torch.trunc({x})",
    "Sign": "torch.sign({x})",
    "Signbit": "torch.signbit({x})",
    "Erf": "torch.erf({x})",
    "Erfc": "torch.erfc({x})",
    "Erfinv": "torch.erfinv({x})",
    "Isnan": "torch.isnan({x})",
    "Isinf": "torch.isinf({x})",
    "Isfinite": "torch.isfinite({x})",
    "LogicalNot": "torch.logical_not({x})",
    "StopGradient": "{x}.detach()",
}


@converter(*_OPERATORS, passthrough=True, operation=True)
def convert_operator(call: LayerCall) -> Converted:
    """``x + 1.0``, ``a * b``, ``x != 0``...: the same operator between torch tensors."""
    args = arguments(call)
    (left, right), perm = broadcast(call, [args["x1"], args["x2"]])
    operator = _OPERATORS[call.class_name]
    return result(call, f"{parenthesised(left)} {operator} {parenthesised(right)}", perm)


@converter(*_FUNCTIONS, passthrough=True, operation=True)
def convert_binary_function(call: LayerCall) -> Converted:
    args = arguments(call)
    values = [args["x1"], args["x2"]]
    (left, right), perm = broadcast(call, values)
    numbers = [tensor_index(call, value) is None and _is_number(value) for value in values]
    if call.class_name in ("Maximum", "Minimum") and any(numbers) and not all(numbers):
        # keras.ops.maximum(x, 0.0) is a clamp (torch.maximum takes tensors only).
        tensor, number = (right, left) if numbers[0] else (left, right)
        bound = "min" if call.class_name == "Maximum" else "max"
        return result(call, f"torch.clamp({tensor}, {bound}={number})", perm)
    left, right = (f"torch.tensor({t})" if n else t for t, n in zip((left, right), numbers))
    return result(call, f"{_FUNCTIONS[call.class_name]}({left}, {right})", perm)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) or (hasattr(value, "ndim") and value.ndim == 0)


@converter(*_UNARY, passthrough=True, operation=True)
def convert_unary(call: LayerCall) -> Converted:
    return Converted([Step(_UNARY[call.class_name].format(x=_float_input(call)))], [same_layout(call)])


def _float_input(call: LayerCall, index: int = 0) -> str:
    """``{x}``, cast to Keras's float dtype when Keras computes an integer input in floats."""
    out, spec = call.node.outputs[0].dtype, call.inputs[index]
    placeholder = "{x}" if len(call.inputs) == 1 else "{x" + str(index) + "}"
    if is_float(out) and not is_float(spec.dtype):
        return f"{placeholder}.to({torch_dtype(call, out)})"
    return placeholder


@converter("Round", passthrough=True, operation=True)
def convert_round(call: LayerCall) -> Converted:
    decimals = int(call.layer.decimals)
    # Both round halves to even (NumPy's rule).
    expr = f"torch.round({_float_input(call)}" + (f", decimals={decimals})" if decimals else ")")
    return Converted([Step(expr)], [same_layout(call)])


@converter("Clip", passthrough=True, operation=True)
def convert_clip(call: LayerCall) -> Converted:
    low, high = call.operand(call.layer.x_min), call.operand(call.layer.x_max)
    return Converted([Step(f"torch.clamp({{x}}, min={low}, max={high})")], [same_layout(call)])


@converter("NanToNum", passthrough=True, operation=True)
def convert_nan_to_num(call: LayerCall) -> Converted:
    layer = call.layer
    options = [f"nan={call.operand(float(layer.nan))}"]
    for name in ("posinf", "neginf"):
        if getattr(layer, name) is not None:
            options.append(f"{name}={call.operand(float(getattr(layer, name)))}")
    return Converted([Step(f"torch.nan_to_num({{x}}, {', '.join(options)})")], [same_layout(call)])


@converter("Where", passthrough=True, operation=True)
def convert_where(call: LayerCall) -> Converted:
    args = arguments(call)
    if args["x1"] is None or args["x2"] is None:
        raise call.unsupported("keras.ops.where(condition) alone (indices of nonzero elements)")
    terms, perm = broadcast(call, [args["condition"], args["x1"], args["x2"]])
    return result(call, f"torch.where({', '.join(terms)})", perm)


@converter("Cast", passthrough=True, operation=True)
def convert_cast(call: LayerCall) -> Converted:
    out = call.node.outputs[0].dtype
    if out == call.inputs[0].dtype:
        return Converted([], [same_layout(call)])
    comment = None
    if not is_float(out) and is_float(call.inputs[0].dtype) and out != "bool":
        comment = "float to integer truncates toward zero, as in Keras"
    return Converted([Step(f"{{x}}.to({torch_dtype(call, out)})", comment)], [same_layout(call)])
