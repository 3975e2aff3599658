"""Channels-last <-> channels-first bookkeeping.

Keras (TF) lays images out as (N, H, W, C); torch convolutions want (N, C, H, W). A ``perm`` says
where each Keras axis sits in the torch tensor: ``torch == keras.transpose(perm)``.
"""

from __future__ import annotations

# How a model takes and returns images: the choice convert() and compare() offer.
INPUT_FORMATS = ("channels_first", "channels_last")


def identity(rank: int) -> tuple[int, ...]:
    return tuple(range(rank))


def channels_first(rank: int) -> tuple[int, ...]:
    """Perm of a channels-last Keras tensor stored channels-first: (0, r-1, 1, ..., r-2)."""
    if rank < 3:
        return identity(rank)
    return (0, rank - 1, *range(1, rank - 1))


def relative(current: tuple[int, ...], wanted: tuple[int, ...]) -> tuple[int, ...]:
    """The ``permute`` argument taking a tensor laid out as ``current`` to ``wanted``."""
    return tuple(current.index(axis) for axis in wanted)


def is_identity(perm: tuple[int, ...]) -> bool:
    return perm == identity(len(perm))


def permute_expression(var: str, current: tuple[int, ...], wanted: tuple[int, ...]) -> str | None:
    """``x.permute(...)`` re-laying ``var`` from ``current`` to ``wanted``; None when already so."""
    if current == wanted:
        return None
    dims = ", ".join(str(d) for d in relative(current, wanted))
    return f"{var}.permute({dims})"


def describe(perm: tuple[int, ...]) -> str:
    """Short human name of a layout, for comments: 'channels-first', 'channels-last', or the perm."""
    if is_identity(perm):
        return "Keras layout"
    if perm == channels_first(len(perm)):
        return "channels-first"
    return f"permuted {perm}"


def axis_first(rank: int, axis: int) -> tuple[int, ...]:
    """Perm putting Keras ``axis`` at torch dim 1 (batch stays first, the rest keep their order)."""
    axis %= rank
    return (0, axis, *(a for a in range(1, rank) if a != axis))


# torch's name of the channels-last memory format of a channels-first tensor of this rank.
_CHANNELS_LAST_FORMATS = {4: "torch.channels_last", 5: "torch.channels_last_3d"}
CHANNELS_LAST_COMMENT = "channels_last memory, same values: the layout convolutions run fastest in"


def channels_last_memory(var: str, rank: int) -> str | None:
    """``var`` as a channels_last-strided tensor, for an input of this rank; None when torch has
    no such format.

    Keras's own layout is channels-last in memory, and oneDNN's convolutions are fastest there: a
    channels-first (N, C, H, W) input copied once into this memory format keeps it through every
    convolution, normalisation, pooling and element-wise op after it (torch propagates it), where
    contiguous (N, C, H, W) tensors cost two reorders per convolution. Values are unchanged.
    """
    memory_format = _CHANNELS_LAST_FORMATS.get(rank)
    return f"{var}.contiguous(memory_format={memory_format})" if memory_format else None
