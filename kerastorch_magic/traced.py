"""What a traced ``call()`` adds to a conversion: its generated classes, weights and constants.

:mod:`conversion`'s builder converts a traced layer's graph into a class of its own; this module
holds the pieces it needs for that which are not about walking nodes: the registry of generated
classes (one per distinct traced code), how weights are initialised, and the readable torch
expressions of constants computed while tracing (``torch.arange``, causal masks).
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import codegen, initializers, naming, tracing
from .converters._source import size_args
from .ir import Node, TensorSpec


@dataclass
class TracedUse:
    """The generated class of one traced custom layer, as its first call made it."""

    class_name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    state: dict[str, np.ndarray]
    resets: bool  # the class has reset_parameters()
    comment: str


@dataclass
class Classes:
    """The classes of traced custom layers in one conversion (dependencies first).

    Uses of one Keras class that trace to the same code share one generated class; uses that
    trace to different code (other sizes, other options) get distinct classes, numbered
    ``TransformerBlock``, ``TransformerBlock2``... so each class stays a plain, argument-free port.
    """

    taken: set[str]
    root: Any = None  # the Keras model being converted
    sources: list[codegen.ClassSource] = field(default_factory=list)
    by_body: dict[tuple[str, str], str] = field(default_factory=dict)
    functions: dict[str, str] = field(default_factory=dict)  # traced functions: name -> source

    def trainable_weight_like(self, array: np.ndarray):
        """The root model's trainable weight ``array`` holds (as is or transposed), if any."""
        if array.ndim == 0 or array.dtype.kind != "f" or np.all(array == array.flat[0]):
            return None  # a constant-valued array (zeros...) cannot tell a weight from a constant
        for variable in getattr(self.root, "trainable_weights", []):
            if int(np.prod(variable.shape)) != array.size:
                continue
            value = keras_value(variable)
            if (value.shape == array.shape and np.array_equal(value, array)) or (
                value.ndim == 2 and value.T.shape == array.shape and np.array_equal(value.T, array)
            ):
                return variable
        return None

    def add(self, wanted: str, source: codegen.ClassSource) -> str:
        key = (wanted, source.body_key())
        if key in self.by_body:
            return self.by_body[key]
        name, number = wanted, 2
        while name in self.taken:
            name, number = f"{wanted}{number}", number + 1
        self.taken.add(name)
        source.class_name = name
        self.sources.append(source)
        self.by_body[key] = name
        return name

    def add_function(self, wanted: str, source: codegen.ClassSource, docstring: str) -> str:
        """A traced parameter-free function (a custom activation) as a module-level ``def``.

        Returns its name: ``wanted``, numbered when another function already has it with
        other code (two users' ``act`` functions); the same code under the same name is one def.
        """
        name, number = wanted, 2
        while True:
            text = function_source(source, name, docstring)
            if self.functions.get(name, text) == text:
                self.functions[name] = text
                return name
            name, number = f"{wanted}{number}", number + 1


def function_name(layer) -> str:
    """The ``def`` name of a traced function: its Python name, else ``activation``; no builtin."""
    raw = getattr(getattr(layer, "function", None), "__name__", "")
    name = naming.identifier(raw if raw.isidentifier() else "activation", "activation")
    return f"{name}_" if name in dir(builtins) else name


def function_source(source: codegen.ClassSource, name: str, docstring: str) -> str:
    """``source``'s ``forward`` as a function ``name`` (it declares nothing: no ``self``).

    A Lambda's argument is called ``inputs`` (Keras's name); a lone argument is renamed ``x``,
    the name an activation function's input has in hand-written code.
    """
    args = ", ".join(source.forward_args)
    lines: list[str] = []
    seen: set[str] = set()
    for statement in source.statements:
        if isinstance(statement, tuple):  # a tap point: the function is one row of a comparison
            continue
        if statement.comment:
            lines += codegen._comment_lines(statement.comment, "    ", seen)
        lines.append(f"    {statement.target} = {statement.expr}")
    lines.append(f"    return {', '.join(source.returns)}")
    body = "\n".join(lines)
    if len(source.forward_args) == 1 and not re.search(r"\bx\b", body):
        body = re.sub(rf"\b{re.escape(args)}\b", "x", body)
        args = "x"
    return f'def {name}({args}):\n    """{docstring}"""\n{body}\n'


def keras_value(variable) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable))


def empty(shape: tuple, dtype) -> str:
    """``torch.empty(...)`` of a shape and numpy dtype (float32 is torch's default)."""
    dims = size_args(shape)
    dtype = np.dtype(dtype)
    suffix = "" if dtype == np.float32 else f", dtype=torch.{dtype.name}"
    return f"torch.empty({dims}{suffix})"


def arange_expression(array: np.ndarray, device: str) -> str | None:
    """``torch.arange(...)`` when the 1-D array is an arithmetic progression, else None."""
    if array.ndim != 1 or array.size < 2 or array.dtype.kind not in "iuf":
        return None
    start, step = array[0].item(), (array[1] - array[0]).item()
    if step == 0 or not np.array_equal(array, start + step * np.arange(array.size, dtype=array.dtype)):
        return None
    stop = start + step * array.size
    parts = (
        [repr(stop)]
        if start == 0 and step == 1
        else [repr(start), repr(stop)] + ([repr(step)] if step != 1 else [])
    )
    # Integer positions are int64 in torch (Keras says int32): same values, and what indexing wants.
    if array.dtype.kind == "f":
        parts.append(f"dtype=torch.{array.dtype.name}")
    parts.append(f"device={device}.device")
    return f"torch.arange({', '.join(parts)})"


def causal_mask_expression(array: np.ndarray, device: str) -> str | None:
    """``torch.tril(torch.ones(n, n, ...))`` when the array is a causal mask (leading unit axes)."""
    if array.ndim < 2 or array.shape[-1] != array.shape[-2] or any(d != 1 for d in array.shape[:-2]):
        return None
    size = array.shape[-1]
    if size < 2 or not np.array_equal(array.reshape(size, size), np.tril(np.ones((size, size), array.dtype))):
        return None
    dtype = "" if array.dtype == np.float32 else f", dtype=torch.{array.dtype.name}"
    expr = f"torch.tril(torch.ones({size}, {size}{dtype}, device={device}.device))"
    return expr + ("[" + ", ".join(["None"] * (array.ndim - 2)) + "]" if array.ndim > 2 else "")


def variable_init(variable, shape: tuple) -> list[str]:
    """``reset_parameters`` lines for a traced weight, from the initialiser ``add_weight`` got."""
    config = tracing.initializer_of(variable)
    if config is None:
        return []
    # torch's fan-based initialisers need 2 dimensions: below that, explicit bounds (Keras's fans).
    torch_shape = tuple(shape) if len(shape) >= 2 else (0,)
    lines = initializers.init_lines(config, tuple(shape), torch_shape, "WEIGHT")
    return [line.replace("{m}.WEIGHT", "{m}") for line in lines]


_SERIALISED_OPTIONS = ("_regularizer", "_constraint", "_initializer")


def safe_config(layer) -> dict | None:
    """``layer.get_config()``, even when a custom regularizer or constraint cannot serialise.

    Such objects do not change the forward pass (the keras-io PointNet's OrthogonalRegularizer has
    no get_config()); they are left out of the config instead of failing the conversion. A layer
    whose activation was set to None after it was built (keras-io's grad_cam:
    ``model.layers[-1].activation = None``) computes no activation (Keras's call() skips None) but
    cannot serialise it: its config says ``"linear"``. None (read lazily by the converter) for
    layers with neither.
    """
    import keras

    custom = [
        name
        for name, value in vars(layer).items()
        if name.endswith(_SERIALISED_OPTIONS)
        and value is not None
        and not tracing.is_builtin(value)
        and not isinstance(value, (str, dict))
    ]
    unset = {"activation": keras.activations.linear} if getattr(layer, "activation", "") is None else {}
    if not custom and not unset:
        return None
    try:
        return _config_with(layer, unset)
    except Exception:  # noqa: BLE001 - fall back to a config without the custom objects
        if not custom:
            raise
        return _config_with(layer, {**unset, **dict.fromkeys(custom)})


def _config_with(layer, attributes: dict) -> dict:
    """``layer.get_config()`` with ``attributes`` set for the call (bypassing Keras's tracking)."""
    saved = {name: getattr(layer, name) for name in attributes}
    try:
        for name, value in attributes.items():
            object.__setattr__(layer, name, value)
        return layer.get_config()
    finally:
        for name, value in saved.items():
            object.__setattr__(layer, name, value)


RANDOM_COMMENT = (
    "Random at inference too, as in Keras (keras.random): every call draws new values, from "
    "torch's generator, so outputs match Keras only in distribution"
)


def is_random(node: Node) -> bool:
    """Whether a node's output is random at inference (a traced layer drawing keras.random)."""
    if node.subgraph is None:
        return False
    return any(tracing.is_random(n.layer) or is_random(n) for n in node.subgraph.nodes)


def lambda_name(node: Node) -> str | None:
    """A Lambda layer Keras named itself is named after its function (``swish``, ``lambda_layer``)."""
    if node.class_name != "Lambda" or naming.stable(node.layer.name, "Lambda") != "lambda":
        return None
    name = getattr(getattr(node.layer, "function", None), "__name__", "")
    return naming.snake_case(name) if name.isidentifier() else "lambda_layer"
