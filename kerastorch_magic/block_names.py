"""Names in the block classes of :mod:`blocks`, read from Keras's layer names.

Keras applications name their layers by block (``conv2_block1_1_conv``, ``block2a_expand_conv``,
``expanded_conv_4_project``, ``convnext_tiny_stage_1_block_0_layernorm``): the words up to a
numbered word are the block, the rest the layer within it. These helpers turn that into class
names (``Block``, ``ExpandedConv``), submodule names (``conv1``, ``expand_conv``), stage
attributes (``conv3``, ``block4``, ``stage1``) and parameter names.
"""

from __future__ import annotations

import re

from . import naming

DIGIT = re.compile(r"\d")


def local_attr(attr: str, block_id: str | None) -> str:
    """A submodule's name inside its block: the Keras name less the block prefix, a leading
    number moved to the end (``conv2_block1_1_conv`` -> ``conv1``, ``block2a_se_reduce`` ->
    ``se_reduce``)."""
    prefix = naming.identifier(block_id) + "_" if block_id else None
    local = attr[len(prefix) :] if prefix and attr.startswith(prefix) else re.sub(r"_\d+$", "", attr)
    words = local.split("_")
    if block_id:  # a nested model's layer repeats its block's words: ``..._block_1`` + ``..._conv_1``
        block_words = block_id.split("_")
        while len(words) > 1 and block_words and words[0] == block_words[0]:
            words, block_words = words[1:], block_words[1:]
        if len(words) > 1 and words[-1] == block_id.split("_")[-1] and words[-1].isdigit():
            words = words[:-1]
    if len(words) > 1 and words[0].isdigit():
        words = [*words[1:-1], words[-1] + words[0]]
    return naming.identifier("_".join(words), "layer")


def short(local: str) -> str:
    """A submodule's name without its kind (``expand_conv`` -> ``expand``, ``se_reduce`` -> ``se``)."""
    words = local.split("_")
    return "_".join(words[:-1]) if len(words) > 1 and not words[-1].isdigit() else local


def last_numbered(block_id: str) -> tuple[list[str], int]:
    words = block_id.split("_")
    last = max((i for i, w in enumerate(words) if DIGIT.search(w)), default=len(words) - 1)
    return words, last


def class_name(block_id: str | None) -> str:
    """``conv2_block1`` -> ``Block``, ``block2a`` -> ``Block``, ``expanded_conv_4`` -> ``ExpandedConv``."""
    if block_id is None:
        return "Block"
    words, last = last_numbered(block_id)
    stem = re.sub(r"\d.*$", "", words[last])
    if not stem:  # a bare number: the words naming it come before
        before = [w for w in words[:last] if not DIGIT.search(w)]
        start = last
        while start > 0 and not DIGIT.search(words[start - 1]):
            start -= 1
        stem_words = (words[start:last] or before[-1:])[-2:]
    else:
        stem_words = [stem]
    name = "".join(w.capitalize() for w in stem_words if w)
    return name if name.isidentifier() else "Block"


def stage_of(block_id: str | None) -> str | None:
    """The stage a block belongs to: ``conv3`` of ``conv3_block2``, ``block4`` of ``block4b``,
    ``convnext_tiny_stage_1`` of ``convnext_tiny_stage_1_block_0``; None when the name has none."""
    if block_id is None:
        return None
    words, last = last_numbered(block_id)
    lettered = re.fullmatch(r"(\D*\d+)[a-z]+", words[last])
    if lettered:
        return "_".join([*words[:last], lettered[1]])
    start = last
    while start > 0 and not DIGIT.search(words[start - 1]):
        start -= 1
    return "_".join(words[:start]) or None


def stage_name(stage_id: str) -> str:
    """The stage attribute: its last numbered word, with the word before a bare number
    (``conv3``, ``block4``, ``stage_1``)."""
    words, last = last_numbered(stage_id)
    if words[last].isdigit() and last > 0:
        return f"{words[last - 1]}{words[last]}"
    return words[last]


def lone_name(block_id: str) -> str:
    """``convnext_tiny_downsampling_block_1`` -> ``downsampling_block_1``: the words naming the
    block's kind (at most two) and its number."""
    words, last = last_numbered(block_id)
    start = last
    while start > 0 and not DIGIT.search(words[start - 1]) and last - start < 2:
        start -= 1
    return "_".join(words[start : last + 1])


def id_list(ids: list[str | None]) -> str:
    if None in ids:
        return f"{len(ids)} blocks" if len(ids) > 1 else "1 block"
    return ", ".join(ids) if len(ids) <= 3 else f"{ids[0]}, {ids[1]}, ..., {ids[-1]} ({len(ids)} blocks)"


def general(comment: str | None, varied: dict[str, str]) -> str | None:
    """A comment written for one instance, made true of every instance of the block: the
    numbers of the arguments that became parameters are replaced by the parameter
    (``groups=96`` -> ``groups=channels``), a quoted tuple of them is left out."""
    if not comment or not varied:
        return comment
    for hint, param in varied.items():
        if hint:
            comment = re.sub(rf"\b{re.escape(hint)}=[\d.e+-]+", f"{hint}={param}", comment)
    return re.sub(r"\s*\(\([\d\s,()]+\)\)|\s*\(pads for the \d+x\d+ input\)", "", comment)
