"""The Keras initialisers of a traced layer's own weights (a Variable does not keep its own)."""

from __future__ import annotations

import inspect


def initializer_of(variable):
    """The Keras initialiser (serialised) ``add_weight`` got for ``variable``, if it is known.

    A Variable does not remember its initialiser; :func:`recover_initializers` finds it.
    """
    return getattr(variable, "_kerastorch_initializer", None)


def recover_initializers(layer) -> None:
    """Find the initialiser of each of ``layer``'s own weights by building a twin of the layer.

    The twin (``from_config`` + ``build`` with the recorded build shapes) runs the user's
    ``add_weight`` calls again while they are recorded; its weights come in the same order as the
    original's. Best effort: a layer that cannot be rebuilt keeps torch's uninitialised values
    in ``reset_parameters`` (and says so in a comment).
    """
    import warnings

    import keras
    from keras.src.layers.layer import Layer

    own = {
        True: list(getattr(layer, "_trainable_variables", [])),
        False: list(getattr(layer, "_non_trainable_variables", [])),
    }
    if not any(own.values()) or all(initializer_of(v) is not None for v in own[True] + own[False]):
        return
    original = Layer.add_weight
    signature = inspect.signature(original)
    made: list[tuple] = []

    def add_weight(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs).arguments
        made.append((self, bound.get("initializer"), bound.get("trainable", True)))
        return original(self, *args, **kwargs)

    Layer.add_weight = add_weight
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            twin = type(layer).from_config(layer.get_config())
            shapes = getattr(layer, "_build_shapes_dict", None) or {}
            if not twin.built and shapes:
                twin.build(*shapes.values())
    except Exception:  # noqa: BLE001 - best effort, see the docstring
        return
    finally:
        Layer.add_weight = original
    found = {True: [], False: []}
    for owner, initializer, trainable in made:
        if owner is twin:
            found[bool(trainable)].append(initializer)
    for trainable, variables in own.items():
        if len(found[trainable]) != len(variables):
            continue
        for variable, initializer in zip(variables, found[trainable]):
            if initializer is None:
                initializer = (
                    "glorot_uniform" if "float" in str(variable.dtype) else "zeros"
                )  # Keras's default
            if not isinstance(initializer, str):
                try:
                    initializer = keras.initializers.serialize(initializer)
                except Exception:  # noqa: BLE001 - a custom initialiser: unknown
                    continue
            try:
                variable._kerastorch_initializer = initializer
            except AttributeError:
                pass
