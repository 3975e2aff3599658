"""The converter package's layering: each shared helper has one home, and families import it there.

Source-text formatters live in ``converters/_source.py``, layout helpers in ``converters/_common.py``
(docs/DESIGN.md §4). A family module importing one from another family would tie the families
together for formatting; a second definition (even a private ``_same_layout``) could drift.
"""

import ast
import inspect
from pathlib import Path

from kerastorch_magic.converters import _common, _source

HOMES = (_source, _common)
SHARED = {
    name: module.__name__.rsplit(".", 1)[1]
    for module in HOMES
    for name, value in vars(module).items()
    if inspect.isfunction(value) and value.__module__ == module.__name__
}
FOLDER = Path(_source.__file__).parent


def _modules() -> list[tuple[str, ast.Module]]:
    return [(path.stem, ast.parse(path.read_text())) for path in sorted(FOLDER.glob("*.py"))]


def test_every_home_holds_helpers():
    assert {"number", "compact", "int_or_tuple", "size_args"} <= set(SHARED)
    assert {"same_layout", "common_perm", "has_keras_mask"} <= set(SHARED)


def test_shared_helpers_are_imported_from_their_home():
    wrong = [
        f"{stem} imports {alias.name} from .{node.module}"
        for stem, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
        if alias.name in SHARED and node.module != SHARED[alias.name]
    ]
    assert not wrong, wrong


def test_shared_helpers_are_defined_once():
    twins = [
        f"{stem}.{node.name}"
        for stem, tree in _modules()
        if stem not in {module.__name__.rsplit(".", 1)[1] for module in HOMES}
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") in SHARED
    ]
    assert not twins, f"redefined instead of imported from converters/_source.py or _common.py: {twins}"
