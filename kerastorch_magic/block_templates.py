"""Source lines as templates whose number literals are slots: what varies between repeated blocks.

Two blocks of a model are the same structure when their lines are equal up to the numbers written
in them (channels, strides, paddings, a reshape's size). A line becomes a :class:`Template`: its
text with each number literal (or tuple of them) cut out as a :class:`Slot` that remembers the
parameter it fills (``in_channels``, ``stride``: read from the called function's signature). A
``torch.nn`` module's constructor call also gets slots for the numeric arguments it leaves at
their defaults, so ``nn.Conv2d(64, 64, 1)`` and ``nn.Conv2d(64, 128, 1, stride=2)`` share a template
and ``stride`` becomes a block parameter.
"""

from __future__ import annotations

import ast
import inspect
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 - resolves the ``F.`` calls of generated code
from torch import nn

_NAMESPACES = {"nn": nn, "F": F, "torch": torch}


@dataclass(frozen=True)
class Slot:
    """One number literal (or tuple of them) of a line."""

    value: object  # the literal's value (int, float or tuple), compared across blocks
    text: str  # as the line writes it
    hint: str  # the parameter of the called function it fills, "" when unknown
    default: bool = False  # not written: the module's default, a slot so blocks that set it match


@dataclass(frozen=True)
class Keyword:
    """A defaulted keyword argument of a module constructor: written only when a block sets it."""

    name: str
    slot: int


@dataclass(frozen=True)
class Template:
    pieces: tuple  # str (text) | int (a slot's index) | Keyword
    slots: tuple[Slot, ...]

    def key(self) -> tuple:
        """The line with its numbers blanked: equal keys are the same line up to its numbers."""
        if len(self.pieces) == 1 and str(self.pieces[0]).lstrip().startswith("#"):
            # A comment line (an initialiser's note quoting this layer's fans): its numbers too.
            return (re.sub(r"\d+(\.\d+)?", "#", self.pieces[0]),)
        return tuple(
            p if isinstance(p, str) else ("#",) if isinstance(p, int) else ("kw", p.name) for p in self.pieces
        )

    def render(self, values: dict[int, str | None]) -> str:
        """The line with slot ``i`` written as ``values[i]``; a :class:`Keyword` whose value is None
        is left out (the module's default)."""
        out: list[str] = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
            elif isinstance(piece, int):
                out.append(values[piece])
            elif values[piece.slot] is not None:
                separator = "" if "".join(out).rstrip().endswith("(") else ", "
                out.append(f"{separator}{piece.name}={values[piece.slot]}")
        return "".join(out)


def _literal(node: ast.AST):
    """The value of a number literal, a negated one or a tuple of them; None for anything else."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _literal(node.operand)
        return None if inner is None or isinstance(inner, tuple) else -inner
    if isinstance(node, ast.Tuple) and node.elts:
        values = [_literal(e) for e in node.elts]
        if all(v is not None and not isinstance(v, tuple) for v in values):
            return tuple(values)
    return None


def _callee(func: ast.AST):
    """The torch object a generated call names (``nn.Conv2d``, ``F.pad``), or None."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name) or func.id not in _NAMESPACES:
        return None
    target = _NAMESPACES[func.id]
    for part in reversed(parts):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


def _parameters(target) -> list[inspect.Parameter]:
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return []
    return [p for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _hints(tree: ast.AST) -> dict[int, str]:
    """id(argument node) -> the parameter it fills, for the calls whose signature is known."""
    hints: dict[int, str] = {}
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        for keyword in call.keywords:
            if keyword.arg:
                hints[id(keyword.value)] = keyword.arg
        params = _parameters(_callee(call.func)) if _callee(call.func) is not None else []
        for position, arg in enumerate(call.args):
            if position < len(params):
                hints[id(arg)] = params[position].name
    return hints


def _defaulted(call: ast.Call, all_numeric: bool = False) -> list[tuple[str, object]]:
    """A module constructor's numeric keyword parameters and their defaults: those the call
    leaves out, or (``all_numeric``) all of them that are not passed positionally."""
    target = _callee(call.func)
    if not (inspect.isclass(target) and issubclass(target, nn.Module)):
        return []
    params = _parameters(target)
    positional = {p.name for p in params[: len(call.args)]}
    given = positional if all_numeric else positional | {k.arg for k in call.keywords}
    out = []
    for param in params:
        default = param.default
        numeric = type(default) in (int, float) or (
            isinstance(default, tuple) and default and all(type(v) in (int, float) for v in default)
        )
        if param.name not in given and numeric:
            out.append((param.name, default))
    return out


def template(text: str, module_call: bool = False) -> Template:
    """``text`` (one line of code, ``{m}`` allowed) as a :class:`Template`.

    ``module_call``: the line is a submodule's constructor, whose numeric keyword arguments
    (written or left at their defaults) become :class:`Keyword` slots. A line that does not parse
    (a comment) has no slots.
    """
    code = text.replace("{m}", "_m_")
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError:
        return Template((text,), ())
    if not code.isascii():  # ast offsets count bytes: only plain text is cut by them
        return Template((text,), ())
    call = tree.body
    if module_call and isinstance(call, ast.Call) and _defaulted(call, all_numeric=True):
        return _module_template(code, call)
    return _plain_template(code, tree.body)


def _plain_template(code: str, root: ast.AST, start: int = 0, end: int | None = None) -> Template:
    """Slots for the literals of ``root``, the text ``code[start:end]`` around them."""
    hints = _hints(root)
    found: list[tuple[int, int, Slot]] = []

    def visit(node: ast.AST) -> None:
        value = _literal(node)
        if value is not None:
            first, last = node.col_offset, node.end_col_offset
            found.append((first, last, Slot(value, code[first:last], hints.get(id(node), ""))))
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(root)
    pieces: list = []
    slots: list[Slot] = []
    position = start
    for first, last, slot in sorted(found, key=lambda f: f[0]):
        pieces += [code[position:first], len(slots)]
        slots.append(slot)
        position = last
    pieces.append(code[position:end])
    return Template(_clean(pieces), tuple(slots))


def _module_template(code: str, call: ast.Call) -> Template:
    """A module constructor: positional arguments as written, then one :class:`Keyword` per
    numeric keyword parameter (so a written ``stride=2`` and a default stride are one slot)."""
    numeric = dict(_defaulted(call, all_numeric=True))
    pieces: list = [code[call.col_offset : call.func.end_col_offset] + "("]
    slots: list[Slot] = []
    hints = _hints(call)

    def splice(part: Template) -> None:
        offset = len(slots)
        for piece in part.pieces:
            pieces.append(piece + offset if isinstance(piece, int) else piece)
        slots.extend(part.slots)

    arguments = [*call.args, *(k for k in call.keywords if not _is_numeric_keyword(k, numeric))]
    for position, arg in enumerate(arguments):
        if position:
            pieces.append(", ")
        value = arg.value if isinstance(arg, ast.keyword) else arg
        if isinstance(arg, ast.keyword):
            pieces.append(f"{arg.arg}=")
        literal = _literal(value)
        if literal is not None:
            splice(
                Template(
                    (0,), (Slot(literal, ast.get_source_segment(code, value), hints.get(id(value), "")),)
                )
            )
        else:
            splice(_plain_template(code, value, value.col_offset, value.end_col_offset))
    written = {k.arg: k.value for k in call.keywords if _is_numeric_keyword(k, numeric)}
    for name, default in numeric.items():
        pieces.append(Keyword(name, len(slots)))
        if name in written:
            node = written[name]
            slots.append(Slot(_literal(node), ast.get_source_segment(code, node), name))
        else:
            slots.append(Slot(default, repr(default), name, default=True))
    pieces.append(")")
    return Template(_clean(pieces), tuple(slots))


def _is_numeric_keyword(keyword: ast.keyword, numeric: dict) -> bool:
    return keyword.arg in numeric and _literal(keyword.value) is not None


def _clean(pieces: list) -> tuple:
    return tuple(p.replace("_m_", "{m}") if isinstance(p, str) else p for p in pieces if p != "")
