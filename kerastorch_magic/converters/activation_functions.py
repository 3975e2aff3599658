"""Activation functions passed as objects that are not ``keras.activations``: ``keras.ops`` and TF.

Real notebooks write ``Dense(64, activation=ops.gelu)`` or, from the Keras 2 era,
``Dense(64, activation=tf.nn.gelu)`` and ``mlp(x, activation=tf.tanh)``. These are not custom
functions: their formulas are known. Each is matched by identity (a user's own function of the
same name is not mistaken for one) and mapped to the ``keras.activations`` name with the same
formula, or to its own template where the defaults differ: ``keras.ops.gelu`` defaults to the
tanh approximation while ``keras.activations.gelu`` and ``tf.nn.gelu`` use the exact erf form.

TensorFlow is never imported here: its functions are only looked up when the user's code has
imported it already (a function object from TF means TF is in ``sys.modules``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

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
