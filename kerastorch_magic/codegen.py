"""Converted layers -> Python source of one ``nn.Module`` class.

Takes the per-layer results that :mod:`convert` collected (declarations, forward statements,
initialisers) and lays them out as hand-written PyTorch: imports actually used, ``__init__`` with
commented declarations, an explicit ``forward``, a ``reset_parameters`` grouping identical
initialisers, then ``ruff format`` for stable formatting.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from dataclasses import dataclass, field

from . import naming
from .inplace import in_place_lines

# ruff's (and black's) default: generated code is left unchanged by `ruff format` with default
# settings, the conventions most projects use.
LINE_LENGTH = 88


@dataclass
class Declaration:
    attr: str
    ctor: str
    comment: str | None
    init: list[str]  # reset_parameters lines with {m} for the module


@dataclass
class Statement:
    target: str  # variable(s) assigned
    expr: str
    comment: str | None = None
    prologue: bool = False  # prepares an input before any layer runs: part of no layer's block
    alike: bool = False  # the operands have the result's shape and dtype (registry.Step.alike)


@dataclass
class ClassSource:
    class_name: str
    header: list[str]  # comment lines at the top of the file
    docstring: str
    forward_args: list[str]
    declarations: list[Declaration]
    statements: list[Statement | tuple[int, str]]  # (trace index, var) entries are tap points
    returns: list[str]
    helpers: dict[str, str] = field(default_factory=dict)
    # The classes of traced custom layers this one instantiates (theirs first), rendered above it.
    classes: list[ClassSource] = field(default_factory=list)
    # A repeated block's class (see blocks.py): the constructor's parameters, and whether its own
    # __init__ runs reset_parameters (a block's is run by the model that holds it, once).
    init_args: list[str] = field(default_factory=list)
    resets_in_init: bool = True

    def body_key(self) -> str:
        """Everything but the class name: two traced layers with equal keys share one class."""
        return repr((self.docstring, self.forward_args, self.declarations, self.statements, self.returns))


def _explanation(paragraph: str) -> str:
    """What a comment explains, numbers aside: repeats of it are the same explanation.

    The numbers that differ between two layers' comments (BatchNorm's eps, a padding's sizes,
    the input size a TF 'same' pad was computed for) are in the line of code itself.
    """
    return re.sub(r"\d+(\.\d+)?(e-?\d+)?", "#", " ".join(paragraph.split()))


def _comment_lines(text: str, indent: str, seen: set[str]) -> list[str]:
    """``text`` as ``#`` lines wrapped to the code's width (names in it are made inert first).

    A paragraph explaining what an earlier comment of the class already did (``seen``) is left
    out: a hand port explains BatchNorm's momentum once, not above each of fifty layers.
    """
    width = LINE_LENGTH - 2 - len(indent)
    lines = []
    for paragraph in text.splitlines():
        key = _explanation(paragraph)
        if paragraph.strip() and key not in seen:
            seen.add(key)
            safe = naming.comment_text(paragraph, 400)
            lines += [f"{indent}# {line}" for line in textwrap.wrap(safe, width)]
    return lines


def _init_method(declarations: list[Declaration]) -> list[str]:
    """``reset_parameters`` with modules sharing identical initialisers grouped in one loop."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for decl in declarations:
        if decl.init:
            groups.setdefault(tuple(decl.init), []).append(decl.attr)
    if not groups:
        return []
    lines = [
        "    def reset_parameters(self):",
        '        """Re-initialise every weight as Keras would (its initialisers, not torch\'s)."""',
    ]
    for init, attrs in groups.items():
        # A group whose lines are all comments (an initialiser with no torch twin) would make
        # a loop with no body: write it once per module instead.
        if len(attrs) == 1 or all(line.lstrip().startswith("#") for line in init):
            lines += [f"        {line.format(m='self.' + a)}" for a in attrs for line in init]
        else:
            members = ", ".join(f"self.{a}" for a in attrs)
            lines.append(f"        for layer in ({members}):")
            lines += [f"            {line.format(m='layer')}" for line in init]
    return lines


def _class_lines(source: ClassSource, trace: bool) -> list[str]:
    """The ``class`` block of one module (``trace``: ``forward`` calls ``self._tap(i, var)``)."""
    body = ["", "", f"class {source.class_name}(nn.Module):"]
    body += ['    """' + source.docstring.rstrip() + '\n    """', ""]
    seen: set[str] = set()  # explanations this class has written (each is written once)
    if source.declarations:  # nothing to declare (a parameter-free Lambda): nn.Module's __init__
        signature = ", ".join(["self", *source.init_args])
        body += [f"    def __init__({signature}):", "        super().__init__()"]
    for decl in source.declarations:
        if decl.comment:
            body += _comment_lines(decl.comment, "        ", seen)
        body.append(f"        self.{decl.attr} = {decl.ctor}")
    init = _init_method(source.declarations)
    if init and source.resets_in_init:
        body.append("        self.reset_parameters()")
    if source.declarations:
        body.append("")
    body += [f"    def forward(self, {', '.join(source.forward_args)}):"]
    # Taps read tensors a later in-place op would change: the traced class computes out of place.
    rewritten = {} if trace else in_place_lines(source.statements, source.declarations)
    for position, statement in enumerate(source.statements):
        if isinstance(statement, tuple):
            if trace:
                body.append(f"        self._tap({statement[0]}, {statement[1]})")
            continue
        if statement.comment:
            body += _comment_lines(statement.comment, "        ", seen)
        body.append(f"        {rewritten.get(position, f'{statement.target} = {statement.expr}')}")
    ret = source.returns[0] if len(source.returns) == 1 else ", ".join(source.returns)
    body.append(f"        return {ret}")
    if init:
        body += [""] + init
    return body


def has_reset_parameters(source: ClassSource) -> bool:
    """Whether the rendered class defines ``reset_parameters`` (some declaration has init lines)."""
    return any(decl.init for decl in source.declarations)


def render(source: ClassSource, trace: bool = False) -> str:
    """Source text of the module; with ``trace``, ``forward`` also calls ``self._tap(i, var)``.

    Helpers come first, then the classes of traced custom layers, then the main class; only the
    main class is traced (a custom layer's output is one row of the comparison).
    """
    helpers: dict[str, str] = {}
    for inner in source.classes:
        helpers.update(inner.helpers)
    helpers.update(source.helpers)
    body: list[str] = []
    for helper in helpers.values():
        body += ["", "", helper.rstrip()]
    for inner in source.classes:
        body += _class_lines(inner, trace=False)
    body += _class_lines(source, trace)
    code_only = "\n".join(line.split("#", 1)[0] for line in "\n".join(body).splitlines())
    imports = []
    if re.search(r"\bmath\.", code_only):
        imports.append("import math")
    imports.append("")
    if re.search(r"\btorch\.", code_only):
        imports.append("import torch")
    if re.search(r"\bF\.", code_only):
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    if imports[0] == "":
        imports = imports[1:]
    text = "\n".join([*source.header, *imports, *body]) + "\n"
    return format_source(text)


def format_source(text: str) -> str:
    """``ruff format --isolated`` the text (ruff defaults: 88 columns); unchanged without ruff."""
    ruff = _ruff()
    if ruff is None:
        return text
    result = subprocess.run(
        [ruff, "format", "--quiet", "--isolated", "-"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"generated code does not parse (ruff format): {result.stderr.strip()}")
    return result.stdout


def _ruff() -> str | None:
    try:
        from ruff.__main__ import find_ruff_bin

        return find_ruff_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("ruff")
