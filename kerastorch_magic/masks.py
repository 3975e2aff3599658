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
    arguments = getattr(keras_node, "arguments", None)
    call = getattr(operation, "call", None)
    if arguments is None or call is None:
        return []
    try:
        signature = inspect.signature(call)
        bound = signature.bind_partial(*arguments.args, **arguments.kwargs).arguments
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
