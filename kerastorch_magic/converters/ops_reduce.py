"""keras.ops reductions and orderings: sum, mean, max, min, prod, any, all, std, var, logsumexp,
argmax/argmin, count_nonzero, average, cumsum/cumprod, sort/argsort, top_k, norm, and the segment
reductions (segment_sum/max/min).

Reductions run in their input's layout, the Keras axes mapped to torch dims; the result keeps
the order of the remaining axes. ``axis=None`` reduces every axis, batch included (NumPy's
rule). Where Keras keeps a dtype that torch would widen (the sum of int32 is int32 in Keras,
int64 in torch; indices are int32 in Keras), the generated code says so with ``dtype=``/``.int()``.
"""

from __future__ import annotations

import numpy as np

from .. import layout
from ..registry import Converted, LayerCall, Step, converter
from ._source import int_or_tuple
from .ops_common import (
    arguments,
    axes_of,
    dtype_of,
    is_float,
    keep_dims,
    keras_layout,
    result,
    torch_dtype,
    value_in_keras_layout,
)

# Operation -> (torch method, whether it takes dtype=).
_REDUCTIONS = {
    "Sum": ("sum", True),
    "Mean": ("mean", True),
    "Prod": ("prod", True),
    "Max": ("amax", False),
    "Amax": ("amax", False),
    "Min": ("amin", False),
    "Amin": ("amin", False),
    "Any": ("any", False),
    "All": ("all", False),
    "Std": ("std", False),
    "Var": ("var", False),
    "Logsumexp": ("logsumexp", False),
}


def _reduced(call: LayerCall, axis, keepdims: bool, whole: bool = True) -> tuple[str, tuple[int, ...]]:
    """``dim=..., keepdim=True`` arguments and the output layout of a reduction over ``axis``.

    Over every axis without keepdims the arguments are empty (``x.sum()``) when ``whole`` says
    the torch function allows that.
    """
    spec = call.inputs[0]
    axes = axes_of(call, axis, spec.rank)
    axes = list(range(spec.rank)) if axes is None else axes
    if whole and len(axes) == spec.rank and not keepdims:
        return "", ()
    dims = sorted(spec.torch_dim(a) for a in axes)
    perm = spec.perm if keepdims else keep_dims(spec.perm, set(axes))
    return f"dim={int_or_tuple(dims)}" + (", keepdim=True" if keepdims else ""), perm


def _joined(*options: str) -> str:
    return ", ".join(o for o in options if o)


@converter(*_REDUCTIONS, operation=True)
def convert_reduction(call: LayerCall) -> Converted:
    layer = call.layer
    if getattr(layer, "initial", None) is not None:
        raise call.unsupported(f"{call.class_name.lower()} with initial={layer.initial!r}")
    method, takes_dtype = _REDUCTIONS[call.class_name]
    options, perm = _reduced(call, layer.axis, bool(layer.keepdims), whole=method != "logsumexp")
    out, source = call.node.outputs[0].dtype, "{x}"
    if method in ("std", "var"):
        options = _joined(options, "correction=0")  # NumPy's ddof=0
    if takes_dtype and (out != call.inputs[0].dtype or not is_float(out)):  # torch widens ints
        options = _joined(options, f"dtype={torch_dtype(call, out)}")
    elif is_float(out) and not is_float(call.inputs[0].dtype):
        source = f"{{x}}.to({torch_dtype(call, out)})"  # Keras computes integers in floats
    if method == "logsumexp":
        return result(call, f"torch.logsumexp({_joined(source, options)})", perm)
    return result(call, f"{source}.{method}({options})", perm)


@converter("Argmax", "Argmin", operation=True)
def convert_argmax(call: LayerCall) -> Converted:
    method = call.class_name.lower()
    keepdims = bool(call.layer.keepdims)
    if call.layer.axis is None:  # the index into the flattened array, in Keras's order
        expr = f"{keras_layout(call, 0)}.{method}({'keepdim=True' if keepdims else ''})"
        rank = len(call.output_shapes[0])
        return result(call, f"{expr}.int()", layout.identity(rank), "Keras returns int32 indices")
    spec = call.inputs[0]
    axis = int(call.layer.axis) % spec.rank
    perm = spec.perm if keepdims else keep_dims(spec.perm, {axis})
    options = f"dim={spec.torch_dim(axis)}" + (", keepdim=True" if keepdims else "")
    return result(call, f"{{x}}.{method}({options}).int()", perm, "Keras returns int32 indices")


@converter("CountNonzero", operation=True)
def convert_count_nonzero(call: LayerCall) -> Converted:
    options, perm = _reduced(call, call.layer.axis, False)
    return result(
        call, f"torch.count_nonzero({_joined('{x}', options)}).int()", perm, "Keras counts in int32"
    )


@converter("Average", operation=True)
def convert_average(call: LayerCall) -> Converted:
    """NumPy's ``average`` (a mean over ``axis``), not the Average layer."""
    if arguments(call).get("weights") is not None:
        raise call.unsupported("keras.ops.average with weights")
    options, perm = _reduced(call, call.layer.axis, False)
    return result(call, f"{{x}}.mean({options})", perm)


@converter("Cumsum", "Cumprod", operation=True)
def convert_cumulative(call: LayerCall) -> Converted:
    method = call.class_name.lower()
    out = call.node.outputs[0].dtype
    dtype = f", dtype={torch_dtype(call, out)}" if out != call.inputs[0].dtype or not is_float(out) else ""
    if call.layer.axis is None:  # NumPy flattens first (in Keras's order)
        return result(call, f"{keras_layout(call, 0)}.flatten().{method}(0{dtype})")
    spec = call.inputs[0]
    return result(call, f"{{x}}.{method}(dim={spec.torch_dim(int(call.layer.axis))}{dtype})", spec.perm)


@converter("Sort", "Argsort", operation=True)
def convert_sort(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    if call.layer.axis is None:
        raise call.unsupported(f"{call.class_name.lower()} with axis=None")
    dim = spec.torch_dim(int(call.layer.axis))
    if call.class_name == "Sort":
        return result(call, f"torch.sort({{x}}, dim={dim}).values", spec.perm)
    return result(call, f"torch.argsort({{x}}, dim={dim}).int()", spec.perm, "Keras returns int32 indices")


@converter("TopK", operation=True)
def convert_top_k(call: LayerCall) -> Converted:
    spec = call.inputs[0]
    k = int(call.layer.k)
    comment = "torch's indices are int64 (Keras: int32)"
    if not call.layer.sorted:
        comment += "; sorted, which Keras's unsorted order does not promise"
    step = Step(f"torch.topk({{x}}, {k}, dim={spec.torch_dim(-1)})", comment)
    return Converted([step], [call.output_spec(spec.perm, 0), call.output_spec(spec.perm, 1)])


@converter("Norm", operation=True)
def convert_norm(call: LayerCall) -> Converted:
    layer = call.layer
    spec = call.inputs[0]
    axes = axes_of(call, layer.axis, spec.rank)
    order = layer.ord
    if axes is not None and len(axes) == 2 and order not in (None, "fro"):
        raise call.unsupported(f"matrix norm ord={order!r}")
    if order == "fro" or order is None:
        order = 2
    if isinstance(order, str):
        raise call.unsupported(f"norm ord={order!r}")
    if axes is None:  # NumPy: the 2-norm of the flattened array
        axes = list(range(spec.rank))
    options, perm = _reduced(call, axes, bool(layer.keepdims))
    order_text = "" if order == 2 else f"ord={call.operand(float(order))}, "
    return result(call, f"torch.linalg.vector_norm({{x}}, {order_text}{options})", perm)


@converter("Median", "Quantile", "Percentile", operation=True)
def convert_quantile(call: LayerCall) -> Converted:
    """NumPy's median/quantile/percentile: ``torch.quantile`` (the same interpolation methods).

    ``torch.median`` is not NumPy's median (it returns the lower middle value), hence quantile.
    """
    layer, spec = call.layer, call.inputs[0]
    if call.class_name == "Median":
        q, method = 0.5, "linear"
    else:
        q, method = arguments(call)["q"], layer.method
        if hasattr(q, "shape") and np.ndim(q) != 0:
            raise call.unsupported(f"{call.class_name.lower()} of several q at once")
        q = float(q) / (100.0 if call.class_name == "Percentile" else 1.0)
        if method not in ("linear", "midpoint"):
            # Measured: 'nearest' rounds halfway positions unlike torch, and inside a model
            # Keras's 'lower'/'higher' do not even match NumPy's.
            raise call.unsupported(f"{call.class_name.lower()} method={method!r}")
    axes = axes_of(call, layer.axis, spec.rank)
    keepdims = bool(layer.keepdims)
    method_text = "" if method == "linear" else f', interpolation="{method}"'
    source = "{x}" if is_float(spec.dtype) else f"{{x}}.to({torch_dtype(call, call.node.outputs[0].dtype)})"
    if axes is None or len(axes) == spec.rank:  # NumPy: over the flattened array
        if keepdims:
            raise call.unsupported(f"{call.class_name.lower()} over every axis with keepdims")
        return result(call, f"torch.quantile({keras_layout(call, 0)}.flatten(), {q!r}{method_text})", ())
    if len(axes) > 1:
        raise call.unsupported(f"{call.class_name.lower()} over several axes at once")
    dim = spec.torch_dim(axes[0])
    perm = spec.perm if keepdims else keep_dims(spec.perm, set(axes))
    options = f"dim={dim}" + (", keepdim=True" if keepdims else "")
    return result(call, f"torch.quantile({source}, {q!r}, {options}{method_text})", perm)


# -- segment reductions -----------------------------------------------------------------------------
# Operation -> (Tensor.scatter_reduce_ mode, what an empty segment holds in TensorFlow's unsorted
# segment reductions, which Keras's TensorFlow backend runs). Sum: index_add_ into zeros. (Not
# index_reduce_, which would say the same more briefly but warns that it is in beta.)
_SEGMENT_REDUCTIONS = {
    "SegmentSum": (None, None),
    "SegmentMax": ("amax", "min"),
    "SegmentMin": ("amin", "max"),
}


@converter(*_SEGMENT_REDUCTIONS, operation=True)
def convert_segment_reduction(call: LayerCall) -> Converted:
    """``ops.segment_sum(data, ids, num_segments)``: rows of ``data`` (axis 0) summed, or their
    max/min taken, into ``num_segments`` rows by id (graph networks: messages to their nodes)."""
    mode, empty = _SEGMENT_REDUCTIONS[call.class_name]
    segments = call.layer.num_segments
    if segments is None:
        raise call.unsupported("num_segments=None sizes the output by the largest id, a data value")
    if mode is not None and call.layer.sorted:
        raise call.unsupported("sorted=True: TensorFlow's sorted segment max/min leave empty segments 0")
    args = arguments(call)
    if not is_float(dtype_of(call, args["data"])):
        raise call.unsupported(f"segment reductions of {dtype_of(call, args['data'])} data (float converts)")
    data = value_in_keras_layout(call, args["data"])
    ids = value_in_keras_layout(call, args["segment_ids"])
    if dtype_of(call, args["segment_ids"]) != "int64":
        ids += ".long()"  # torch indexes with int64
    rows = f"({int(segments)}, *{data}.shape[1:])"
    if mode is None:
        return result(call, f"{data}.new_zeros{rows}.index_add_(0, {ids}, {data})")
    fill = f"torch.finfo({data}.dtype).{empty}"
    rank = len(args["data"].shape)
    index = f"{ids}.view(-1{', 1' * (rank - 1)}).expand_as({data})" if rank > 1 else ids
    expr = f'{data}.new_full({rows}, {fill}).scatter_reduce_(0, {index}, {data}, "{mode}")'
    extreme = {"min": "lowest", "max": "highest"}[empty]
    return result(call, expr, comment=f"an empty segment holds the {extreme} float, as in TensorFlow")
