"""EinsumDense: ``activation(einsum(equation, x, kernel) + bias)``.

Most equations are a Dense over the last input axes (``abc,cd->abd``, MultiHeadAttention's
``abc,cde->abde``): the kernel is then an ``nn.Linear`` weight over the flattened contracted axes,
its output unflattened to the new axes. Any other equation runs as ``torch.einsum`` (same
notation, ``...`` included) on the Keras-shaped kernel. Keras's bias covers the output axes from
the first one in ``bias_axes`` to the end (1 where an axis has no bias); broadcast as it is in Keras.
"""

from __future__ import annotations

import re

import numpy as np

from .. import initializers, layout
from ..registry import Converted, Fragment, LayerCall, Submodule, converter
from ._source import size_args
from .activations import activation_steps


def _numpy(value) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(value))


def _linear_form(equation: str) -> tuple[int, int] | None:
    """(contracted axes, new axes) when the equation is a Dense over the trailing input axes."""
    match = re.fullmatch(
        r"(\.\.\.|[a-zA-Z]*)([a-zA-Z]+),([a-zA-Z]+)->(\.\.\.|[a-zA-Z]*)([a-zA-Z]+)", equation
    )
    if match is None:
        return None
    prefix, contracted, kernel, out_prefix, new = match.groups()
    # Find the split of the kernel spec into contracted + new, with the shared prefix unchanged.
    for split in range(1, len(kernel)):
        head, tail = kernel[:split], kernel[split:]
        full_in, full_out = prefix + contracted, out_prefix + new
        if full_in.endswith(head) and full_out.endswith(tail):
            batch_in, batch_out = full_in[: -len(head)], full_out[: -len(tail)]
            shared = set(batch_in) & set(kernel)
            if batch_in == batch_out and not shared and not set(head) & set(tail):
                return len(head), len(tail)
    return None


@converter("EinsumDense")
def convert_einsum_dense(call: LayerCall) -> Converted:
    layer, config = call.layer, call.config
    if getattr(layer, "quantization_mode", None):
        raise call.unsupported(
            f"quantized ({layer.quantization_mode}) layers: convert the float model instead"
        )
    equation = config["equation"]
    if not re.fullmatch(r"[a-zA-Z.]+,[a-zA-Z]+->[a-zA-Z.]+", equation):  # pasted into the code
        raise call.unsupported(f"equation {equation!r} is not a plain einsum equation")
    kernel = _numpy(layer.kernel)  # with LoRA, Keras's kernel property merges the adapter in
    bias = None if getattr(layer, "bias", None) is None else _numpy(layer.bias)
    spec = call.inputs[0]
    source = call.input_as(0, layout.identity(spec.rank))
    out_rank = len(call.output_shapes[0])
    form = _linear_form(equation)
    if form is not None and bias is not None and bias.ndim > form[1]:
        form = None  # a bias over batch-like axes: not an nn.Linear bias
    notes = ["LoRA adapter merged into the kernel."] if getattr(layer, "lora_enabled", False) else []
    if form is not None:
        contracted, new = form
        in_features = int(np.prod(kernel.shape[:contracted]))
        new_shape = kernel.shape[contracted:]
        out_features = int(np.prod(new_shape))
        weight = np.ascontiguousarray(kernel.reshape(in_features, out_features).T)
        state = {"weight": weight}
        init = initializers.init_lines(config.get("kernel_initializer"), kernel.shape, weight.shape, "weight")
        if bias is not None:
            # Keras's bias broadcasts over the new axes; as nn.Linear's bias it is spelled out.
            full = np.broadcast_to(bias, new_shape)
            state["bias"] = np.ascontiguousarray(full.reshape(out_features))
            init += initializers.init_lines(
                config.get("bias_initializer"), bias.shape, (out_features,), "bias"
            )
        ctor = f"nn.Linear({in_features}, {out_features}{'' if bias is not None else ', bias=False'})"
        comment = f"Keras EinsumDense {equation!r}: a Dense over the last {contracted} input axes"
        if contracted > 1:
            source = f"{source}.flatten(-{contracted})"
        expr = f"{{m}}({source})"
        if len(new_shape) > 1:
            expr = f"{expr}.unflatten(-1, {tuple(int(d) for d in new_shape)})"
        module = Submodule(ctor, state, init, comment)
    else:
        kernel_shape = size_args(kernel.shape)
        parameters = [f'"kernel": nn.Parameter(torch.zeros({kernel_shape}))']
        state = {"kernel": kernel}
        init = initializers.init_lines(config.get("kernel_initializer"), kernel.shape, kernel.shape, "kernel")
        expr = f'torch.einsum("{equation}", {source}, {{m}}.kernel)'
        if bias is not None:
            bias_shape = size_args(bias.shape)
            parameters.append(f'"bias": nn.Parameter(torch.zeros({bias_shape}))')
            state["bias"] = bias
            init += initializers.init_lines(config.get("bias_initializer"), bias.shape, bias.shape, "bias")
            expr = f"{expr} + {{m}}.bias"
        ctor = "nn.ParameterDict({" + ", ".join(parameters) + "})"
        module = Submodule(
            ctor, state, init, f"Keras EinsumDense {equation!r}: its kernel, as Keras shapes it"
        )
    act = activation_steps(call, expr, config.get("activation"), out_rank - 1)
    outputs = [call.output_spec(layout.identity(out_rank))]
    return Converted.from_fragment(Fragment(notes=notes) + act, outputs, {"": module})
