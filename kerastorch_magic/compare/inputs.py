"""The data both models see: seeded random inputs, or the user's arrays checked against the model."""

from __future__ import annotations

import numpy as np
import torch

from ..graph import read_model
from ..ir import Graph

UNKNOWN_SIZE = 64  # drawn for an axis Keras leaves unknown (a sequence's length), at most


def prepare(graph: Graph, inputs, batch_size: int, seed: int) -> tuple[list[np.ndarray], str]:
    """Keras-layout numpy arrays for each model input, and a description for the header.

    ``inputs`` None draws seeded random data: normal floats, and integer ids below the vocabulary
    size of an ``Embedding`` they feed. Otherwise one array per model input (a dict by input
    name, a list, or a single array), in Keras's layout; ValueError when one does not fit.
    """
    if inputs is None:
        rng = np.random.default_rng(seed)
        arrays = []
        vocab = _embedding_sizes(graph)
        unknown = _unknown_size(graph)
        for value in graph.inputs:
            shape = (batch_size, *(unknown if d is None else d for d in value.shape[1:]))
            dtype = np.dtype(value.dtype if value.dtype != "string" else "float32")
            if np.issubdtype(dtype, np.integer) or id(value) in vocab:
                # Token ids, also in a float input (a Sequential's default) that an Embedding reads.
                arrays.append(rng.integers(0, vocab.get(id(value), 10), shape).astype(dtype))
            elif dtype == np.bool_:
                arrays.append(rng.random(shape) < 0.5)
            else:
                arrays.append(rng.standard_normal(shape).astype(dtype))
        what = f"random normal data (seed {seed}), batch {batch_size}"
    else:
        arrays = _user_arrays(graph, inputs)
        what = "your input"
    shapes = "; ".join(f"{value.name} {tuple(a.shape)} {a.dtype}" for value, a in zip(graph.inputs, arrays))
    return arrays, f"{what}: {shapes}"


def check(model, inputs) -> None:
    """ValueError when ``inputs`` do not fit ``model`` (what :func:`prepare` would raise)."""
    _user_arrays(read_model(model), inputs)


def to_torch(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """One input array on ``device``; integer ids become int64 (what embeddings index with)."""
    array = np.ascontiguousarray(array)
    tensor = torch.from_numpy(array.astype(np.int64) if array.dtype.kind in "iu" else array)
    return tensor.to(device)


def _embedding_sizes(graph: Graph) -> dict[int, int]:
    """id(model input) -> the smallest ``input_dim`` of an Embedding it feeds directly.

    Traced layers are looked into (a PositionalEmbedding's token Embedding reads the input).
    """
    sizes: dict[int, int] = {}
    for value in graph.inputs:
        for node in graph.readers_inside(value):
            dim = getattr(node.layer, "input_dim", None)
            if node.class_name == "Embedding" and dim:
                sizes[id(value)] = min(sizes.get(id(value), dim), int(dim))
    return sizes


def _unknown_size(graph: Graph) -> int:
    """The size drawn for unknown axes: :data:`UNKNOWN_SIZE`, or the rows of a position table.

    An Embedding that reads computed indices, not an input of its graph, looks up positions
    (``ops.arange(length)`` or ``ops.cumsum(ops.ones_like(ids)) - 1`` in a PositionalEmbedding,
    traced layers included): Keras itself fails on a sequence longer than its ``input_dim``.
    """
    size = UNKNOWN_SIZE
    for node, owner in _nodes_with_owner(graph):
        dim = getattr(node.layer, "input_dim", None)
        entry = {id(v) for v in owner.inputs}
        if node.class_name == "Embedding" and dim and not any(id(v) in entry for v in node.inputs):
            size = min(size, int(dim))
    if size < UNKNOWN_SIZE or not any(d is None for v in graph.inputs for d in v.shape[1:]):
        return size
    # An image of unknown size: InceptionV3 (keras-io's deep_dream) needs 75 pixels at least, and
    # Keras fails deep inside it on less. The first size whose shapes Keras can infer.
    return next((s for s in _IMAGE_SIZES if _shapes_infer(graph, s)), size)


_IMAGE_SIZES = (UNKNOWN_SIZE, 96, 128, 224, 299)  # tried in this order


def _shapes_infer(graph: Graph, size: int) -> bool:
    """Whether Keras's shape inference runs the graph on inputs with ``size`` for unknown axes."""
    import keras

    specs = {
        id(v): keras.KerasTensor((1, *(size if d is None else d for d in v.shape[1:])), dtype=v.dtype)
        for v in graph.inputs
    }
    try:
        for node in graph.nodes:
            keras_node = node.keras_node
            local = {id(t): specs[id(v)] for t, v in zip(keras_node.input_tensors, node.inputs)}
            args, kwargs = keras_node.arguments.fill_in(local)
            outputs = keras.tree.flatten(node.layer.compute_output_spec(*args, **kwargs))
            specs.update((id(v), t) for v, t in zip(node.outputs, outputs))
    except Exception:  # noqa: BLE001 - any failure means: not this size
        return False
    return True


def _nodes_with_owner(graph: Graph):
    """Every node with the graph it belongs to, looking into traced layers' graphs."""
    for node in graph.nodes:
        yield node, graph
        if node.subgraph is not None:
            yield from _nodes_with_owner(node.subgraph)


def _to_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _user_arrays(graph: Graph, inputs) -> list[np.ndarray]:
    names = [value.name for value in graph.inputs]
    if isinstance(inputs, dict):
        missing = [name for name in names if name not in inputs]
        if missing:
            raise ValueError(f"inputs is missing {missing}; the model's inputs are {names}")
        inputs = [inputs[name] for name in names]
    elif not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"the model takes {len(graph.inputs)} input(s) {names}, got {len(inputs)}")
    arrays = []
    for value, array in zip(graph.inputs, inputs):
        array = _to_numpy(array)
        if array.dtype == np.float64 and value.dtype == "float32":
            array = array.astype(np.float32)
        expected = value.shape
        fits = len(array.shape) == len(expected) and all(
            want is None or want == got for want, got in zip(expected, array.shape)
        )
        if not fits:
            shape = "(" + ", ".join("N" if d is None else str(d) for d in expected) + ")"
            raise ValueError(
                f"input {value.name!r} has shape {tuple(array.shape)}; the Keras model takes {shape} "
                "(give inputs in Keras's layout, batch first)"
            )
        arrays.append(array)
    return arrays
