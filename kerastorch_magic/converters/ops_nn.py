"""keras.ops neural-network and linear-algebra operations: activations, log_softmax, one_hot,
normalize, moments, matmul, einsum, dot, tensordot (images, convolutions, pooling: ops_image).

The activations without options reuse the activation table of :mod:`activations` (one torch
expression per Keras activation); the ones with options pass them explicitly where Keras's
defaults differ from torch's (``keras.ops.gelu`` defaults to the tanh approximation, ``F.gelu``
to the exact form). ``einsum`` reads each operand in its own torch layout: the subscripts are
permuted instead of the tensors.
"""

from __future__ import annotations

from .. import layout
from ..registry import Converted, LayerCall, Step, converter
from ._common import same_layout
from ._source import number
from .activations import _ACTIVATIONS, convert_relu, convert_softmax
from .ops_common import (
    arguments,
    keep_dims,
    keras_layout,
    result,
    tensor_index,
    torch_dtype,
    value_in_keras_layout,
)

# keras.ops Operation -> the keras.activations name of the same function (no options).
_ACTIVATION_OPS = {
    "Relu": "relu",
    "Relu6": "relu6",
    "Sigmoid": "sigmoid",
    "Softplus": "softplus",
    "Softsign": "softsign",
    "Silu": "silu",
    "LogSigmoid": "log_sigmoid",
    "HardSigmoid": "hard_sigmoid",
    "HardSilu": "hard_silu",
    "Selu": "selu",
    "TanhShrink": "tanh_shrink",
    "HardTanh": "hard_tanh",
    "SparsePlus": "sparse_plus",
    "SparseSigmoid": "sparse_sigmoid",
}


@converter(*_ACTIVATION_OPS, passthrough=True, operation=True)
def convert_activation_op(call: LayerCall) -> Converted:
    entry = _ACTIVATIONS[_ACTIVATION_OPS[call.class_name]]
    return Converted([Step(entry.template.format(x="{x}"), entry.note)], [same_layout(call)])


# keras.activations.relu(x, max_value=...) and keras.ops.softmax(x, axis) record operations named
# like the layers, with the same attributes (negative_slope/max_value/threshold, axis): the layer
# converters read them alike.
converter("ReLU", passthrough=True, operation=True)(convert_relu)
converter("Softmax", passthrough=True, operation=True)(convert_softmax)


@converter("LeakyRelu", "Elu", "Celu", "Gelu", "SoftShrink", "HardShrink", "Threshold", "Squareplus",
           passthrough=True, operation=True)  # fmt: skip
def convert_parametric_activation(call: LayerCall) -> Converted:
    layer, name = call.layer, call.class_name
    comment = None
    if name == "LeakyRelu":
        expr = f"F.leaky_relu({{x}}, negative_slope={number(layer.negative_slope)})"
    elif name in ("Elu", "Celu"):
        alpha = float(layer.alpha)
        expr = f"F.{name.lower()}({{x}}" + (f", alpha={number(alpha)})" if alpha != 1.0 else ")")
    elif name == "Gelu":
        if layer.approximate:
            expr = 'F.gelu({x}, approximate="tanh")'
            comment = "keras.ops.gelu defaults to the tanh approximation (F.gelu: exact erf form)"
        else:
            expr = "F.gelu({x})"
    elif name in ("SoftShrink", "HardShrink"):
        threshold = float(layer.threshold)
        expr = f"F.{name.lower()}({{x}}" + (f", lambd={number(threshold)})" if threshold != 0.5 else ")")
    elif name == "Threshold":
        # Keras: x where x > threshold, else default_value; F.threshold's rule exactly.
        expr = f"F.threshold({{x}}, {number(layer.threshold)}, {number(layer.default_value)})"
    else:  # Squareplus: no torch twin
        b = float(layer.b)
        expr = f"({{x}} + torch.sqrt({{x}} * {{x}} + {number(b)})) / 2"
        comment = f"Keras squareplus (no torch twin), b={b:g}"
    return Converted([Step(expr, comment)], [same_layout(call)])


@converter("LogSoftmax", "Glu", passthrough=True, operation=True)
def convert_axis_activation(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    if not isinstance(call.layer.axis, int):
        raise call.unsupported(f"{call.class_name} over axis={call.layer.axis!r}")
    function = "F.glu" if call.class_name == "Glu" else "F.log_softmax"
    return Converted([Step(f"{function}({{x}}, dim={spec.torch_dim(call.layer.axis)})")], [same_layout(call)])


@converter("OneHot", operation=True)
def convert_one_hot(call: LayerCall) -> Converted:
    layer = call.layer
    if layer.sparse:
        raise call.unsupported("one_hot(sparse=True)")
    rank = len(call.output_shapes[0])
    axis = int(layer.axis) % rank
    dtype = torch_dtype(call, call.node.outputs[0].dtype)
    expr = f"F.one_hot({keras_layout(call, 0)}.long(), {int(layer.num_classes)}).to({dtype})"
    if axis != rank - 1:
        expr += f".movedim(-1, {axis})"
    return result(call, expr, comment="F.one_hot wants int64 classes in [0, num_classes)")


@converter("Matmul", operation=True)
def convert_matmul(call: LayerCall) -> Converted:
    args = arguments(call)
    left, right = (value_in_keras_layout(call, args[name]) for name in ("x1", "x2"))
    return result(call, f"{left} @ {right}")


@converter("Dot", operation=True)
def convert_dot(call: LayerCall) -> Converted:
    """NumPy's ``dot`` (not the Dot layer): matmul when the second operand has rank <= 2."""
    args = arguments(call)
    ranks = [len(args[name].shape) for name in ("x1", "x2")]
    left, right = (value_in_keras_layout(call, args[name]) for name in ("x1", "x2"))
    if 0 in ranks:
        return result(call, f"{left} * {right}")
    if ranks[1] > 2:
        raise call.unsupported("keras.ops.dot of a second operand of rank > 2 (backends differ)")
    return result(call, f"{left} @ {right}")


@converter("Tensordot", operation=True)
def convert_tensordot(call: LayerCall) -> Converted:
    args = arguments(call)
    left, right = (value_in_keras_layout(call, args[name]) for name in ("x1", "x2"))
    axes = call.layer.axes
    dims = (
        int(axes)
        if isinstance(axes, int)
        else tuple(tuple(a) if isinstance(a, (list, tuple)) else a for a in axes)
    )
    return result(call, f"torch.tensordot({left}, {right}, dims={call.operand(dims)})")


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@converter("Einsum", operation=True)
def convert_einsum(call: LayerCall) -> Converted:
    """The same equation, each operand read in its own torch layout (subscripts permuted)."""
    subscripts = call.layer.subscripts.replace(" ", "")
    operands = list(arguments(call)["operands"])
    inputs, arrow, output = subscripts.partition("->")
    terms, letters = [], inputs.split(",")
    if len(letters) != len(operands):
        raise call.unsupported(f"einsum {subscripts!r} with {len(operands)} operands")
    for position, (value, sub) in enumerate(zip(operands, letters)):
        index = tensor_index(call, value)
        if index is None or "." in subscripts:  # constants and ellipses: Keras's layout
            terms.append(value_in_keras_layout(call, value))
            continue
        spec = call.inputs[index]
        letters[position] = "".join(sub[axis] for axis in spec.perm)
        terms.append(call.input_as(index, spec.perm))
    equation = ",".join(letters) + arrow + output
    return result(call, f'torch.einsum("{equation}", {", ".join(terms)})')


@converter("Normalize", passthrough=True, operation=True)
def convert_normalize(call: LayerCall) -> Converted:
    """``x / max(||x||_p, epsilon)`` along the axis: ``F.normalize``."""
    layer = call.layer
    if not isinstance(layer.axis, int):
        raise call.unsupported(f"normalize over axis={layer.axis!r}")
    import keras

    epsilon = keras.config.epsilon() if layer.epsilon is None else float(layer.epsilon)
    dim = call.inputs[0].torch_dim(layer.axis)
    order = "" if int(layer.order) == 2 else f"p={int(layer.order)}, "
    step = Step(f"F.normalize({{x}}, {order}dim={dim}, eps={epsilon!r})", "Keras's epsilon")
    return Converted([step], [same_layout(call)])


@converter("Moments", operation=True)
def convert_moments(call: LayerCall) -> Converted:
    """``keras.ops.moments``: the mean and the (biased) variance over the axes."""
    spec = call.inputs[0]
    axes = sorted(int(a) % spec.rank for a in call.layer.axes)
    keepdims = bool(call.layer.keepdims)
    dims = "(" + ", ".join(str(spec.torch_dim(a)) for a in axes) + ("," if len(axes) == 1 else "") + ")"
    options = f"dim={dims}" + (", keepdim=True" if keepdims else "")
    perm = spec.perm if keepdims else keep_dims(spec.perm, set(axes))
    expr = f"{{x}}.mean({options}), {{x}}.var({options}, correction=0)"
    return Converted([Step(expr)], [call.output_spec(perm, 0), call.output_spec(perm, 1)])


@converter("DotProductAttention", operation=True)
def convert_dot_product_attention(call: LayerCall) -> Converted:
    """``keras.ops.dot_product_attention``: ``F.scaled_dot_product_attention``.

    Keras lays the tensors out (batch, time, heads, features), torch (batch, heads, time,
    features): the heads axis moves on the way in and back. A boolean mask means "attend" in
    both; an additive bias becomes a float ``attn_mask``; Keras's causal mask is the lower
    triangle anchored top-left, as torch's ``is_causal``.
    """
    layer = call.layer
    if layer.attn_logits_soft_cap is not None:
        raise call.unsupported("dot_product_attention with attn_logits_soft_cap")
    args = arguments(call)
    if args["bias"] is not None and args["mask"] is not None:
        raise call.unsupported("dot_product_attention with both a bias and a mask")
    if any(len(args[name].shape) != 4 for name in ("query", "key", "value")):
        raise call.unsupported("dot_product_attention of unbatched or head-less tensors")
    terms = [
        f"{value_in_keras_layout(call, args[name])}.transpose(1, 2)" for name in ("query", "key", "value")
    ]
    extra = args["bias"] if args["bias"] is not None else args["mask"]
    if extra is not None:
        terms.append(f"attn_mask={value_in_keras_layout(call, extra)}")
    if layer.is_causal:
        if extra is not None:
            raise call.unsupported("dot_product_attention with is_causal and a mask or bias")
        terms.append("is_causal=True")
    if args["scale"] is not None:
        terms.append(f"scale={call.operand(float(args['scale']))}")
    expr = f"F.scaled_dot_product_attention({', '.join(terms)}).transpose(1, 2)"
    return result(call, expr, comment="torch wants (batch, heads, time, features); Keras has heads third")


@converter("LayerNorm", "RMSNorm", operation=True)
def convert_layer_norm_op(call: LayerCall) -> Converted:
    """``keras.ops.layer_normalization``/``rms_normalization`` over the last axis.

    ``F.layer_norm``/``F.rms_norm`` normalise the trailing torch dims: a tensor whose Keras last
    axis sits elsewhere in torch (channels-first) is brought to Keras's layout first.
    """
    import keras

    layer, spec = call.layer, call.inputs[0]
    if not isinstance(layer.axis, int) or layer.axis % spec.rank != spec.rank - 1:
        raise call.unsupported(f"{call.class_name} over axis={layer.axis!r} (only the last axis converts)")
    if getattr(layer, "rms_scaling", False):
        raise call.unsupported("layer_normalization(rms_scaling=True)")
    args = arguments(call)
    epsilon = keras.config.epsilon() if layer.epsilon is None else float(layer.epsilon)
    perm = spec.perm if spec.perm[-1] == spec.rank - 1 else layout.identity(spec.rank)
    size = spec.keras_shape[-1]
    names = ("scale",) if call.class_name == "RMSNorm" else ("gamma", "beta")
    terms = [call.input_as(0, perm), f"({size},)"]
    terms += [value_in_keras_layout(call, args[name]) if args[name] is not None else "None" for name in names]
    while terms[-1] == "None":
        terms.pop()
    function = "F.rms_norm" if call.class_name == "RMSNorm" else "F.layer_norm"
    expr = f"{function}({', '.join(terms)}, eps={epsilon!r})"
    return result(call, expr, perm, "Keras's epsilon" if layer.epsilon is None else None)
