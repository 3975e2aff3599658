"""Turning untrusted Keras names into safe Python identifiers and comment text.

Keras accepts any string as a layer name (quotes, newlines, keywords). Generated code only ever
contains a name as an identifier checked here, or inside a comment with line breaks removed.
"""

from __future__ import annotations

import keyword
import re

# Names generated code uses for itself; identifiers never take them.
_RESERVED = {"self", "F", "nn", "torch", "math", "super", "layer"}


def identifier(raw: str, fallback: str = "layer") -> str:
    """A valid, lower-case, non-keyword Python identifier derived from ``raw``."""
    name = re.sub(r"\W+", "_", str(raw), flags=re.ASCII).strip("_").lower()
    name = re.sub(r"_+", "_", name)
    if not name:
        name = fallback
    if name[0].isdigit():
        name = f"{fallback}_{name}"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in _RESERVED:
        name = f"{name}_"
    return name


def class_identifier(raw: str) -> str:
    """A valid class name: ``raw`` if it is one, else an error naming the problem."""
    if not raw.isidentifier() or keyword.iskeyword(raw):
        raise ValueError(f"class name {raw!r} is not a valid Python identifier")
    return raw


def comment_text(raw: str, limit: int = 120) -> str:
    """``raw`` made safe for a single ``#`` comment line (no line breaks, bounded length)."""
    text = " ".join(str(raw).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def snake_case(class_name: str) -> str:
    """Keras's default layer name for a class: ``Conv2D`` -> ``conv2d``, ``ReLU`` -> ``re_lu``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def stable(name: str, class_name: str) -> str:
    """``name`` without the counter Keras appends to automatic names (``conv2d_7`` -> ``conv2d``).

    Keras numbers automatic names per session, so re-running a cell renames every layer; generated
    code built from the stripped names (de-duplicated in graph order) stays the same across re-runs.
    """
    base = snake_case(class_name)
    if re.fullmatch(re.escape(base) + r"(_\d+)?", name):
        return base
    return name


class Namespace:
    """Hands out unique identifiers (attributes or local variables) within one scope."""

    def __init__(self, taken=()):
        self._taken = set(taken)

    def claim(self, raw: str, fallback: str = "layer") -> str:
        base = identifier(raw, fallback)
        name, suffix = base, 1
        while name in self._taken:
            name = f"{base}_{suffix}"
            suffix += 1
        self._taken.add(name)
        return name
