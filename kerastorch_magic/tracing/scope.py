"""What changes while a ``call()`` is traced, and is put back afterwards.

* ``Layer.__call__``: an inner layer called on arrays computed eagerly from shapes gets them as
  graph constants (so the call is recorded and its weights stay weights);
* ``keras.random.normal``/``uniform``: recorded as draws, not drawn once and baked in;
* ``keras.ops.reshape`` to ``(batch, -1, d)`` with ``batch = ops.shape(x)[0]`` (None while
  tracing): the batch is kept and the ``-1`` computed, ``(-1, n, d)``, which converts;
* the traced layer's attributes holding Variables hold :func:`pseudo.variable_read` tensors.

Only the traced layer's own code sees these: an inner layer's ``call`` runs with tracing off.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from .pseudo import constant, random_draw, random_dropout, variable_read

_STATE = threading.local()


def is_tracing() -> bool:
    return getattr(_STATE, "active", False)


@contextlib.contextmanager
def active(value: bool):
    previous = getattr(_STATE, "active", False)
    _STATE.active = value
    try:
        yield
    finally:
        _STATE.active = previous


def _is_concrete(value) -> bool:
    import keras

    if isinstance(value, (keras.KerasTensor, keras.Variable)):
        return False
    return isinstance(value, np.ndarray) or keras.ops.is_tensor(value)


def _patched_layer_call(original):
    def __call__(self, *args, **kwargs):
        if not is_tracing():
            return original(self, *args, **kwargs)
        import keras

        # Arrays computed eagerly from shapes (the positions of a positional Embedding, a causal
        # attention mask) become graph constants: the call is recorded with them as inputs, so
        # the converter sees them (and the inner layer's weights stay weights).
        def lift(value):
            if not _is_concrete(value):
                return value
            array = keras.ops.convert_to_numpy(value)
            if array.size == 0:
                # ops.arange(x.shape[1]) on an axis of unknown length (None while tracing) is
                # empty: baked in, the port would fail (or be wrong) at every real length.
                # ops.shape(x)[1] is not None while tracing (see .sizes) and converts.
                raise ValueError(
                    f"{type(self).__name__} {self.name!r} is called on an empty array computed "
                    "from a size that is unknown while tracing (an input axis of length None); "
                    "read the size with ops.shape(x)[1], which converts at any length, or give "
                    "the model input a fixed length, e.g. keras.Input((20,))"
                )
            return constant(array)

        args, kwargs = keras.tree.map_structure(lift, (args, kwargs))
        with active(False):  # the inner layer's own call is not the user's code
            return original(self, *args, **kwargs)

    __call__._kerastorch_patch = True
    return __call__


@contextlib.contextmanager
def layer_calls_patched():
    from keras.src.layers.layer import Layer

    original = Layer.__call__
    if getattr(original, "_kerastorch_patch", False):  # nested trace: already patched
        yield
        return
    Layer.__call__ = _patched_layer_call(original)
    try:
        yield
    finally:
        Layer.__call__ = original


def _patched_dropout(original):
    def dropout(inputs, rate, noise_shape=None, seed=None):
        """Keras's dropout as TensorFlow computes it: kept where a uniform draw >= rate, scaled."""
        import keras

        if not is_tracing():
            return original(inputs, rate, noise_shape=noise_shape, seed=seed)
        if noise_shape is None or all(a is None or a == b for a, b in zip(noise_shape, inputs.shape)):
            return random_dropout(inputs, rate)  # F.dropout
        # A mask shared over some axes (noise_shape): drawn at that shape and broadcast.
        shape = tuple(size if size is not None else full for size, full in zip(noise_shape, inputs.shape))
        keep = keras.ops.greater_equal(random_draw("uniform", shape, 0.0, 1.0, inputs.dtype), rate)
        return keras.ops.where(keep, inputs * (1.0 / (1.0 - rate)), 0.0)

    dropout._kerastorch_patch = True
    return dropout


def _patched_alpha_dropout(original):
    def call(self, inputs, training=False):
        """Keras's alpha dropout is torch's: keep with 1 - rate, then the same affine map."""
        if is_tracing() and training and self.rate > 0 and self.noise_shape is None:
            return random_dropout(inputs, self.rate, alpha=True)
        return original(self, inputs, training=training)

    call._kerastorch_patch = True
    return call


def _patched_random(kind: str, original):
    def draw(shape, a=None, b=None, dtype=None, seed=None, **kwargs):
        if not is_tracing():
            return original(shape, *(v for v in (a, b) if v is not None), dtype=dtype, seed=seed, **kwargs)
        names = ("mean", "stddev") if kind == "normal" else ("minval", "maxval")
        defaults = (0.0, 1.0)
        low = kwargs.get(names[0], a if a is not None else defaults[0])
        high = kwargs.get(names[1], b if b is not None else defaults[1])
        return random_draw(kind, shape, low, high, dtype)

    draw._kerastorch_patch = True
    return draw


@contextlib.contextmanager
def random_patched():
    """keras.random.normal/uniform/dropout called by the traced code are recorded, not drawn once.

    (A draw made while tracing would otherwise be baked into the port as a constant.)
    """
    import keras
    from keras.src.backend import random as backend_random
    from keras.src.random import random as keras_random

    saved = []
    # keras.random's functions, and the backend's that layers call directly (AlphaDropout's
    # ops.random.uniform is keras.src.backend.random.uniform).
    for module in (keras.random, keras_random, backend_random):
        for kind in ("normal", "uniform"):
            original = getattr(module, kind)
            if getattr(original, "_kerastorch_patch", False):
                continue
            saved.append((module, kind, original))
            setattr(module, kind, _patched_random(kind, original))
    # Dropout that a call() runs at inference (Monte Carlo dropout: `super().call(x, training=True)`
    # in a Dropout subclass): keras.random.dropout and Dropout.call both end in the backend's.
    if not getattr(backend_random.dropout, "_kerastorch_patch", False):
        saved.append((backend_random, "dropout", backend_random.dropout))
        backend_random.dropout = _patched_dropout(backend_random.dropout)
    # AlphaDropout computes its own (SELU-preserving) dropout with keras.ops: F.alpha_dropout's.
    alpha_call = keras.layers.AlphaDropout.call
    if not getattr(alpha_call, "_kerastorch_patch", False):
        saved.append((keras.layers.AlphaDropout, "call", alpha_call))
        keras.layers.AlphaDropout.call = _patched_alpha_dropout(alpha_call)
    try:
        yield
    finally:
        for module, kind, original in saved:
            setattr(module, kind, original)


@contextlib.contextmanager
def weights_symbolic(layer, attributes: dict[int, str]):
    """Attributes holding the layer's Variables hold VariableRead tensors while tracing."""
    import keras

    swapped = []
    for name, value in list(vars(layer).items()):
        if isinstance(value, keras.Variable):
            attributes.setdefault(id(value), name)
            swapped.append((name, value))
            object.__setattr__(layer, name, variable_read(value))
    try:
        yield
    finally:
        for name, value in swapped:
            object.__setattr__(layer, name, value)


def batch_reshape_target(x, newshape):
    """``(None, -1, 48)`` for an input of shape ``(None, 2, 2, 48)`` -> ``(-1, 4, 48)``.

    While tracing, ``ops.shape(x)[0]`` is None; a reshape to ``(batch, -1, ...)`` then has two
    unknown sizes, which no converter can take. The batch is what None stands for (every tensor
    of the trace shares it), so the other -1 follows from the sample's size. Unchanged otherwise.
    """
    shape = tuple(getattr(x, "shape", ()) or ())
    if not isinstance(newshape, (tuple, list)) or not newshape or newshape[0] is not None:
        return newshape
    if not shape or shape[0] is not None or any(d is None for d in shape[1:]):
        return newshape
    rest = list(newshape[1:])
    if any(d is None for d in rest) or rest.count(-1) > 1:
        return newshape
    size = 1
    for d in shape[1:]:
        size *= d
    known = 1
    for d in rest:
        known *= d if d != -1 else 1
    if -1 in rest:
        if known == 0 or size % known:
            return newshape
        rest[rest.index(-1)] = size // known
    return (-1, *rest)


def _patched_reshape(original):
    def reshape(x, newshape):
        if is_tracing():
            newshape = batch_reshape_target(x, newshape)
        return original(x, newshape)

    reshape._kerastorch_patch = True
    return reshape


@contextlib.contextmanager
def reshape_patched():
    """keras.ops.reshape called by the traced code gets :func:`batch_reshape_target`'s shape."""
    import keras
    from keras.src.ops import numpy as keras_numpy

    saved = []
    for module in (keras.ops, keras_numpy):
        original = module.reshape
        if not getattr(original, "_kerastorch_patch", False):
            saved.append((module, original))
            module.reshape = _patched_reshape(original)
    try:
        yield
    finally:
        for module, original in saved:
            module.reshape = original
