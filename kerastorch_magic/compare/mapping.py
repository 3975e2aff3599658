"""Your own module against Keras: which submodule stands for which layer, and how to read it.

``mapping`` values (see the package docstring) parse into a :class:`TapSpec`. A hooked output is
lined up with Keras's layout by :func:`align_auto`; a Keras layer's fused activation
(``Conv2D(..., activation="relu")``) that the port applies in ``forward`` is applied to the
hooked output by :func:`fused_activation`, with the callables derived from the converters' own
activation table (one source of truth: what ``convert`` writes is what ``compare`` applies).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .. import layout, naming
from ..converters import activations
from ..ir import Node

# Layers that are activations themselves: a hook on their port already sees the activation.
_ACTIVATION_LAYERS = frozenset({"Activation", "ReLU", "Softmax", "LeakyReLU", "ELU", "PReLU"})


@dataclass
class TapSpec:
    """How one Keras layer output is read from the module: a submodule's hook, or an output."""

    module: str  # dotted submodule name; "" for the module's own output
    transform: Callable | None = None
    layout: object = "auto"
    activation: bool = True
    output: int | None = None  # position among the module's outputs (module outputs only)
    activation_fn: Callable | None = None
    activation_note: str = ""

    @classmethod
    def parse(cls, value) -> TapSpec:
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            return cls(value[0], transform=value[1])
        if isinstance(value, dict) and isinstance(value.get("module"), str):
            unknown = set(value) - {"module", "transform", "layout", "activation"}
            if unknown:
                raise ValueError(f"unknown mapping keys {sorted(unknown)}")
            return cls(
                value["module"],
                transform=value.get("transform"),
                layout=value.get("layout", "auto"),
                activation=bool(value.get("activation", True)),
            )
        raise ValueError(
            "mapping values are a submodule name, (name, transform) or "
            f"{{'module': name, 'transform': fn, 'layout': ..., 'activation': bool}}; got {value!r}"
        )


def candidate_names(node: Node) -> list[str]:
    """Submodule names a port would give this layer (as ``convert`` names its attributes)."""
    names = [naming.identifier("_".join((*node.scope, node.layer.name)))]
    if node.scope:
        names.append(".".join(naming.identifier(part) for part in (*node.scope, node.layer.name)))
    return names


def pick(output, index: int):
    """Output ``index`` of a submodule that returns several tensors (else the tensor itself)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        if index < len(output) and isinstance(output[index], torch.Tensor):
            return output[index]
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return output


def count_parameters(module: torch.nn.Module) -> int:
    """Parameters plus floating-point buffers (Keras counts BatchNorm statistics as weights)."""
    total = sum(p.numel() for p in module.parameters())
    total += sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return int(total)


def count_like_keras(modules: list[torch.nn.Module], keras_count: int) -> tuple[int, str]:
    """The parameters of a layer's port as Keras counts them, and a note when that differs.

    torch's recurrent modules have two biases (``bias_ih``, ``bias_hh``) where Keras's LSTM,
    SimpleRNN and GRU(``reset_after=False``) have one: a port keeps ``bias_hh`` at zero. Those
    zero biases are left out when that makes the counts agree; any other difference stays.
    """
    total = sum(count_parameters(module) for module in modules)
    if total == keras_count:
        return total, ""
    with torch.no_grad():
        extra = sum(
            p.numel()
            for module in modules
            for name, p in module.named_parameters()
            if name.rsplit(".", 1)[-1].startswith("bias_hh") and not p.any()
        )
    if extra and total - extra == keras_count:
        return keras_count, (
            f"parameters: PyTorch's second recurrent bias (bias_hh, {extra} zeros) is not counted; "
            "Keras has one bias"
        )
    return total, ""


def align_auto(tensor, keras_shape: tuple, wanted, node: Node, shapes: dict):
    """A hooked tensor in Keras's layout, or None when its shape cannot be lined up."""
    if not isinstance(tensor, torch.Tensor):
        return None
    shape, rank = tuple(tensor.shape), len(keras_shape)
    if isinstance(wanted, (tuple, list)):
        perm = tuple(wanted)
        if sorted(perm) != list(range(rank)) or shape != tuple(keras_shape[a] for a in perm):
            return None
        return tensor.permute(*np.argsort(perm).tolist())
    channels_first = layout.channels_first(rank)
    cf_shape = tuple(keras_shape[a] for a in channels_first)
    if wanted == "channels_first_flatten":
        source = shapes.get(id(node.inputs[0])) if node.inputs else None
        if source is None or len(source) < 3 or tensor.dim() != 2 or tensor.numel() != math.prod(keras_shape):
            return None
        cf = tuple(source[a] for a in layout.channels_first(len(source)))
        return (
            tensor.reshape(cf)
            .permute(*np.argsort(layout.channels_first(len(source))).tolist())
            .reshape(keras_shape)
        )
    if wanted == "channels_first":
        return tensor.permute(*np.argsort(channels_first).tolist()) if shape == cf_shape else None
    if wanted == "channels_last":
        return tensor if shape == tuple(keras_shape) else None
    if wanted not in ("auto", None):
        raise ValueError(f"unknown layout {wanted!r}")
    if rank >= 3 and shape == cf_shape:
        return tensor.permute(*np.argsort(channels_first).tolist())
    if shape == tuple(keras_shape):
        return tensor
    squeezed = [d for d in shape if d != 1]
    if squeezed == [d for d in keras_shape if d != 1] and tensor.numel() == math.prod(keras_shape):
        return tensor.reshape(keras_shape)  # e.g. (N, C, 1, 1) against (N, C)
    return None


def unalign(tensor: torch.Tensor, keras_tensor: torch.Tensor, wanted) -> torch.Tensor | None:
    """Keras's values laid out like the module's ``tensor`` (the inverse of :func:`align_auto`)."""
    shape, keras_shape = tuple(tensor.shape), tuple(keras_tensor.shape)
    rank = len(keras_shape)
    if isinstance(wanted, (tuple, list)):
        return keras_tensor.permute(*wanted)
    channels_first = layout.channels_first(rank)
    if (
        wanted in ("auto", "channels_first")
        and rank >= 3
        and shape == tuple(keras_shape[a] for a in channels_first)
    ):
        return keras_tensor.permute(*channels_first)
    if shape == keras_shape or tensor.numel() == keras_tensor.numel():
        return keras_tensor.reshape(shape)
    return None


@functools.cache
def torch_activations() -> dict[str, Callable | None]:
    """Keras activation name -> torch function on a Keras-layout tensor (``None``: the identity).

    Built from the converters' templates (``converters/activations.py``), evaluated with ``torch``
    and ``F`` for ``{x}`` and Keras's last axis for ``{dim}``. Templates that call a generated
    helper function (``sparsemax``) are left out: a mapping gives a ``transform`` for those.
    """
    table: dict[str, Callable | None] = {}
    for name, entry in activations._ACTIVATIONS.items():
        if entry.helper is not None:
            continue
        if entry.template == "{x}":
            table[name] = None
            continue
        expression = entry.template.format(x="x", dim=-1)
        table[name] = eval(f"lambda x: {expression}", {"torch": torch, "F": F})  # noqa: S307 - our table
    return table


def fused_activation(node: Node, tap: TapSpec, submodule) -> tuple[Callable | None, str]:
    """The Keras layer's own activation, to apply to a hooked submodule's output, and a note."""
    activation = getattr(node.layer, "activation", None)
    if activation is None or not tap.module or tap.transform is not None or not tap.activation:
        return None, ""
    if node.class_name in _ACTIVATION_LAYERS:
        return None, ""
    name = getattr(activation, "__name__", None) or str(activation)
    if name == "linear":
        return None, ""
    if submodule is not None and _ends_with_activation(submodule):
        return None, ""
    table = torch_activations()
    if name not in table:
        return None, (
            f"Keras applies activation {name!r} inside this layer; give a transform in the mapping "
            "to apply it to the hooked output"
        )
    return table[name], f"compared after applying Keras's fused activation {name!r} to the hooked output"


def _ends_with_activation(module) -> bool:
    last = module
    while isinstance(last, torch.nn.Sequential) and len(last):
        last = last[-1]
    return type(last).__module__ == "torch.nn.modules.activation"
