"""Keras masks that a layer applies without the symbolic graph recording them.

A layer whose ``call`` takes ``<argument>_mask`` (MultiHeadAttention's and GroupedQueryAttention's
``query_mask``, ``value_mask``, ``key_mask``), or a ``mask`` and a list of tensors (Attention's
``mask[0]``, ``mask[1]``), gets, at run time, the Keras mask of each such tensor
argument (from an ``Embedding(mask_zero=True)`` or ``Masking`` upstream), but its symbolic node does
not list those masks among its inputs. The graph reader appends them to the node's inputs, in the
order :func:`implicit_masks` gives, after the recorded ones; converters find them the same way.
"""

from __future__ import annotations

import inspect


def implicit_masks(operation, keras_node) -> list[tuple[str, object]]:
    """``[(mask argument name, mask KerasTensor)]`` Keras passes to this call at run time."""
    from .tracing import is_functional

    arguments = getattr(keras_node, "arguments", None)
    call = getattr(operation, "call", None)
    if arguments is None or call is None or is_functional(operation):
        return []  # a nested model's masks are inputs of its own walk (graph._Reader.expand_masked)
    try:
        signature = inspect.signature(call)
        kwargs = dict(arguments.kwargs)
        if "training" not in signature.parameters:
            kwargs.pop("training", None)  # a nested Functional passes it to every layer; __call__ drops it
        bound = signature.bind_partial(*arguments.args, **kwargs).arguments
    except (TypeError, ValueError):
        return []
    masks = []
    for name, value in bound.items():
        mask_name = f"{name}_mask"
        mask = getattr(value, "_keras_mask", None)
        if mask_name in signature.parameters and bound.get(mask_name) is None and mask is not None:
            masks.append((mask_name, mask))
    # A list input (Attention's [query, value, key]) gets ``mask=[its tensors' masks]``; only the
    # query's and the value's are read (Keras's Attention layers ignore the key's).
    first = next(iter(bound.values()), None)
    if "mask" in signature.parameters and bound.get("mask") is None and isinstance(first, (list, tuple)):
        for position, tensor in enumerate(first[:2]):
            mask = getattr(tensor, "_keras_mask", None)
            if mask is not None:
                masks.append((f"mask[{position}]", mask))
    return masks + traced_input_masks(operation, arguments)


def traced_input_masks(operation, arguments) -> list[tuple[str, object]]:
    """The Keras masks a traced custom layer's input tensors carry, when call() is not given them.

    Keras passes ``mask=`` only to a call() with one tensor argument; the inner layers of any
    call() still read each input's mask themselves (keras-io's TransformerDecoder: its
    MultiHeadAttention's query and value masks). The trace gives its fresh inputs these masks.
    """
    from . import registry, tracing

    if registry.find(type(operation).__name__) is not None or not tracing.traceable(operation):
        return []
    given = {id(t) for t in arguments.keras_tensors}
    masks, seen = [], set()
    for position, tensor in enumerate(arguments.keras_tensors):
        mask = getattr(tensor, "_keras_mask", None)
        if mask is not None and id(mask) not in given and id(mask) not in seen:
            seen.add(id(mask))
            masks.append((f"input[{position}]._keras_mask", mask))
    return masks


def implicit_mask_input(node, name: str) -> int | None:
    """Index in ``node.inputs`` of the implicit mask passed as ``name``; None without one.

    Raises LookupError when the graph was read without its implicit masks.
    """
    names = [argument for argument, _ in implicit_masks(node.layer, node.keras_node)]
    if name not in names:
        return None
    recorded = len(node.keras_node.input_tensors)
    if len(node.inputs) != recorded + len(names):
        raise LookupError(f"the graph reader did not add the {name} input")
    return recorded + names.index(name)
