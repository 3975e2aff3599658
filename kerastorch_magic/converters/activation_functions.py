"""Activation functions passed as objects that are not ``keras.activations``: keras.ops, TF, yours.

Real notebooks write ``Dense(64, activation=ops.gelu)`` or, from the Keras 2 era,
``Dense(64, activation=tf.nn.gelu)`` and ``mlp(x, activation=tf.tanh)``. These are not custom
functions: their formulas are known. Each is matched by identity (a user's own function of the
same name is not mistaken for one) and mapped to the ``keras.activations`` name with the same
formula, or to its own template where the defaults differ: ``keras.ops.gelu`` defaults to the
tanh approximation while ``keras.activations.gelu`` and ``tf.nn.gelu`` use the exact erf form.

TensorFlow is never imported here: its functions are only looked up when the user's code has
imported it already (a function object from TF means TF is in ``sys.modules``).

A function of the user's own (``activation=my_gelu``) is traced like a ``Lambda`` layer, on a
symbolic tensor shaped like the layer's output, and becomes a module-level ``def my_gelu(x):``
that the layer's step calls: what a person porting it by hand writes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import SimpleNamespace

from .. import layout, tracing
from ..ir import Node, TensorSpec, Value
from ..registry import LayerCall

# keras.ops functions whose formula and defaults are those of the keras.activations function of
# the same name (checked in tests/test_activations.py against Keras itself).
_KERAS_OPS_AS_ACTIVATIONS = (
    "relu", "relu6", "sigmoid", "tanh", "silu", "swish", "softplus", "softsign", "elu", "selu",
    "celu", "hard_sigmoid", "hard_silu", "hard_swish", "log_sigmoid", "soft_shrink", "hard_shrink",
    "tanh_shrink", "hard_tanh", "softmax", "log_softmax", "sparse_plus", "squareplus", "sparsemax",
    "glu", "sparse_sigmoid", "leaky_relu",
)  # fmt: skip

# TensorFlow functions (dotted paths under ``tf``) with the formula and defaults of a Keras
# activation: tf.nn.gelu is the exact form (approximate=False), tf.nn.leaky_relu's alpha is 0.2,
# tf.nn.softmax's axis is the last one, like Keras's.
_TF_AS_ACTIVATIONS = {
    "nn.relu": "relu", "nn.relu6": "relu6", "nn.elu": "elu", "nn.selu": "selu",
    "nn.gelu": "gelu", "nn.leaky_relu": "leaky_relu", "nn.silu": "silu", "nn.swish": "silu",
    "nn.sigmoid": "sigmoid", "sigmoid": "sigmoid", "math.sigmoid": "sigmoid",
    "nn.tanh": "tanh", "tanh": "tanh", "math.tanh": "tanh",
    "nn.softplus": "softplus", "math.softplus": "softplus", "nn.softsign": "softsign",
    "math.softsign": "softsign", "nn.softmax": "softmax", "nn.log_softmax": "log_softmax",
    "exp": "exponential", "math.exp": "exponential",
}  # fmt: skip


@dataclass(frozen=True)
class KnownFunction:
    """What an activation function object computes: a keras.activations name, or a template."""

    label: str  # how the user wrote it, e.g. "keras.ops.gelu", "tf.nn.gelu"
    name: str | None = None  # the keras.activations function with the same formula and defaults
    template: str | None = None  # else the torch expression of ``{x}``
    note: str | None = None
    sources: tuple[tuple[str, str], ...] = ()  # module-level functions the template calls


_GELU_TANH = KnownFunction(
    "keras.ops.gelu",
    template='F.gelu({x}, approximate="tanh")',
    note=(
        "activation=keras.ops.gelu: its default is approximate=True, the tanh form "
        '(F.gelu(..., approximate="tanh")); keras.activations.gelu and tf.nn.gelu are the exact erf form.'
    ),
)


def known_function(function) -> KnownFunction | None:
    """The known formula of ``function`` (a keras.ops or TF function object), else None."""
    if function is None or not callable(function):
        return None
    return _table().get(id(function))


def _table() -> dict[int, KnownFunction]:
    # Built per call: cheap (a few dozen getattr), and TF may be imported after the first call.
    import keras

    table = {id(keras.ops.exp): KnownFunction("keras.ops.exp", "exponential")}
    for name in _KERAS_OPS_AS_ACTIVATIONS:
        function = getattr(keras.ops, name, None)
        if function is not None:
            table[id(function)] = KnownFunction(f"keras.ops.{name}", name)
    table[id(keras.ops.gelu)] = _GELU_TANH
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        for path, name in _TF_AS_ACTIVATIONS.items():
            function = tf
            for part in path.split("."):
                function = getattr(function, part, None)
            if function is not None:
                table.setdefault(id(function), KnownFunction(f"tf.{path}", name))
    return table


def traced_function(call: LayerCall, function, dim: int) -> KnownFunction:
    """The user's own activation ``function``, traced into a module-level ``def``.

    ``dim`` is the torch dim holding Keras's last axis: it tells the layout the layer's output
    has (channels-last as Keras, or channels-first), which the traced code must follow.
    """
    import keras

    from ..graph import read_trace

    label = getattr(function, "__name__", repr(function))
    if call.traced_function is None:  # a converter called outside a conversion's builder
        raise call.unsupported(
            f"activation {label!r} is a custom function: it is traced only within convert()"
        )
    if getattr(call.layer, "cell", None) is not None:
        raise call.unsupported(
            f"activation {label!r} is a custom function: inside a recurrent layer's step it is not "
            "traced; use a keras.activations function, or write the cell as a custom RNN cell (traced)"
        )
    value = call.node.outputs[0]
    rank = len(value.shape)
    perm = next(
        (p for p in (layout.identity(rank), layout.channels_first(rank)) if p.index(rank - 1) == dim % rank),
        None,
    )
    layer = keras.layers.Lambda(function, name=f"{call.layer.name}_activation")
    x = keras.KerasTensor(tuple(value.shape), dtype=call.layer.compute_dtype)
    scope = (*call.node.scope, call.layer.name)
    try:
        trace = tracing.trace(
            layer, SimpleNamespace(args=(x,), kwargs={}, keras_tensors=[x]), "/".join((*scope, layer.name))
        )
    except Exception as error:  # noqa: BLE001 - whatever the user's code raises names the cause
        raise call.unsupported(
            f"activation {label!r} is a custom function that cannot be traced: {error}"
        ) from error
    subgraph = read_trace(layer, trace, scope, (*call.node.scope_classes, call.class_name))
    same_shape = len(subgraph.outputs) == 1 and tuple(subgraph.outputs[0].shape) == tuple(value.shape)
    if perm is None or not same_shape:
        raise call.unsupported(
            f"activation {label!r} is a custom function that does not keep its input's shape"
        )
    node = Node(
        layer, scope, [Value(tuple(value.shape), value.dtype)], list(subgraph.outputs), None, (), subgraph
    )
    where = tracing.source_of(layer)
    docstring = f"Keras activation {label}{f' ({where})' if where else ''}, traced at inference."
    made = call.traced_function(node, [TensorSpec(tuple(value.shape), perm, value.dtype)], docstring)
    if made is None:
        raise call.unsupported(
            f"activation {label!r} is a custom function that holds weights or constants or changes its "
            "tensor's layout: only a function of its input alone becomes a def; make it a layer (traced)"
        )
    name, source, helpers = made
    return KnownFunction(label, template=f"{name}({{x}})", sources=((name, source), *helpers.items()))
