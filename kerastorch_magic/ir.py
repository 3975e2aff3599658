"""The two small data models of a conversion.

* ``Graph``/``Node``/``Value``: the Keras model as read by :mod:`graph`, nested models flattened;
  a traced layer (custom layer, subclassed model, Lambda) is one node whose ``subgraph`` is its
  ``call()``'s graph.
* ``TensorSpec``: what a torch tensor at some point of the generated ``forward`` holds, relative to
  the Keras tensor at the same point (layout permutation, flatten order).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import naming


@dataclass(frozen=True, eq=False)
class Value:
    """One symbolic Keras tensor: an edge of the graph."""

    shape: tuple  # Keras shape, batch dimension included (usually None)
    dtype: str
    name: str | None = None  # set for model inputs


@dataclass(eq=False)
class Node:
    """One call of one Keras layer (a layer called twice gives two nodes sharing ``layer``)."""

    layer: Any  # keras.layers.Layer
    scope: tuple[str, ...]  # names of the enclosing nested models, outermost first
    inputs: list[Value]
    outputs: list[Value]
    keras_node: Any  # the keras Node, kept for its call arguments
    scope_classes: tuple[str, ...] = ()  # class names of the enclosing models
    # A traced layer (custom layer, subclassed model, Lambda): its call() as a graph of its own.
    subgraph: Graph | None = None

    @property
    def stable_name(self) -> str:
        """Name for generated identifiers: Keras's automatic counters dropped (see naming.stable)."""
        return self.local_name(0)

    def local_name(self, depth: int) -> str:
        """:attr:`stable_name` without the outermost ``depth`` scopes (those of a traced layer)."""
        parts = [naming.stable(n, c) for n, c in zip(self.scope, self.scope_classes)][depth:]
        return "_".join((*parts, naming.stable(self.layer.name, self.class_name)))

    @property
    def class_name(self) -> str:
        return type(self.layer).__name__

    @property
    def is_operation(self) -> bool:
        """A ``keras.ops`` call recorded in a functional graph, not a Keras layer."""
        import keras

        return not isinstance(self.layer, keras.layers.Layer)

    @property
    def qualified_name(self) -> str:
        """Layer name with its nested-model path, e.g. ``encoder/conv2d``."""
        return "/".join((*self.scope, self.layer.name))


@dataclass(eq=False)
class Graph:
    name: str
    inputs: list[Value]
    outputs: list[Value]
    nodes: list[Node]  # topological order
    class_name: str = "Functional"
    # Set for a traced call(): the user's attribute names (id(layer or Variable) -> name), the
    # forward() argument names, the traced layer and the scope its nodes carry.
    attributes: dict[int, str] = field(default_factory=dict)
    input_names: list[str] = field(default_factory=list)
    layer: Any = None
    scope: tuple[str, ...] = ()

    @property
    def stable_name(self) -> str:
        """The model's name without Keras's automatic counter (``sequential_4`` -> ``sequential``)."""
        return naming.stable(self.name, self.class_name)

    def readers(self) -> dict[int, list[Node]]:
        """id(Value) -> nodes reading it, in graph order."""
        readers: dict[int, list[Node]] = {}
        for node in self.nodes:
            for value in node.inputs:
                readers.setdefault(id(value), []).append(node)
        return readers

    def producers(self) -> dict[int, Node]:
        """id(Value) -> the node computing it (model inputs have none)."""
        return {id(value): node for node in self.nodes for value in node.outputs}

    def calls_per_layer(self) -> dict[int, int]:
        """id(layer) -> how many nodes call it (a shared layer is one module called twice)."""
        calls: dict[int, int] = {}
        for node in self.nodes:
            calls[id(node.layer)] = calls.get(id(node.layer), 0) + 1
        return calls

    def readers_inside(self, value: Value) -> list[Node]:
        """The nodes reading ``value``, looking into traced layers' graphs.

        A custom layer reading a model input is not what uses it: its inner layers are (the
        ``Embedding`` of a ``TokenAndPositionEmbedding`` says the input holds token ids).
        """
        found: list[Node] = []
        for node in self.readers().get(id(value), []):
            if node.subgraph is None:
                found.append(node)
                continue
            for position, read in enumerate(node.inputs):
                if read is value:
                    found += node.subgraph.readers_inside(node.subgraph.inputs[position])
        return found


@dataclass(frozen=True)
class TensorSpec:
    """How a torch tensor relates to the Keras tensor it stands for.

    ``torch_array == keras_array.transpose(perm)``; when ``flat_order`` is set (a channels-first
    flatten whose order was folded into the next Dense), additionally
    ``torch_array[:, i] == keras_array[:, flat_order[i]]``.
    """

    keras_shape: tuple
    perm: tuple[int, ...]
    dtype: str = "float32"
    name: str | None = None
    flat_order: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def rank(self) -> int:
        return len(self.keras_shape)

    @property
    def torch_shape(self) -> tuple:
        return tuple(self.keras_shape[axis] for axis in self.perm)

    def torch_dim(self, keras_axis: int) -> int:
        """The torch dimension holding Keras axis ``keras_axis`` (negative axes allowed)."""
        return self.perm.index(keras_axis % self.rank)

    def to_torch_layout(self, keras_array: np.ndarray) -> np.ndarray:
        """Re-lay a Keras array the way this spec says the torch tensor is laid out."""
        array = np.transpose(keras_array, self.perm)
        if self.flat_order is not None:
            array = array[:, self.flat_order]
        return array
