"""How the generated cell gets the Keras weights: in the kernel's memory, or from a file.

* In memory (default): the magic stores the ``state_dict`` in the user namespace under
  :data:`STORE_NAME`, a dict keyed by class name (``_keras2torch_weights["Net"]``); the generated
  cell loads ``globals()["_keras2torch_weights"]["Net"]``. Re-running the source cell refreshes the
  entry, so re-running the generated cell picks the new weights up. It dies with the kernel: after
  a restart, re-run the source cell (or use a file).
* ``--weights PATH``: ``.safetensors`` (``safetensors.torch.save_file``/``load_file``) or ``.pt``/
  ``.pth`` (``torch.save``/``torch.load(..., weights_only=True)``); the generated cell loads the
  file, so it works after a restart with no Keras at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

STORE_NAME = "_keras2torch_weights"
SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth")


class WeightStore(dict):
    """The kernel variable holding in-memory weights: class name -> state_dict.

    ``sources`` remembers which notebook cell produced each entry, to warn when two cells use the
    same class name (the second overwrites the first's weights).
    """

    def __init__(self):
        super().__init__()
        self.sources: dict[str, str | None] = {}

    def __repr__(self) -> str:
        return f"<keras2torch weights of {', '.join(self) or 'no class yet'}>"


class WeightsPathError(ValueError):
    pass


def _is_store(value) -> bool:
    # By name, not identity: a reloaded module (autoreload) defines a new WeightStore class.
    return type(value).__name__ == WeightStore.__name__ and isinstance(getattr(value, "sources", None), dict)


def get_store(user_ns: dict) -> WeightStore:
    """The store in ``user_ns``, created on first use; never replaces a user's own variable."""
    store = user_ns.get(STORE_NAME)
    if store is None:
        store = user_ns[STORE_NAME] = WeightStore()
    elif not _is_store(store):
        raise WeightsPathError(
            f"the variable {STORE_NAME} exists and is not the magic's weight store; rename or delete "
            "it, or use --weights PATH"
        )
    return store


def check_in_memory(user_ns: dict) -> None:
    """Fail early (before the cell runs) when the store's name is taken by something else."""
    store = user_ns.get(STORE_NAME)
    if store is not None and not _is_store(store):
        get_store(user_ns)


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return "safetensors"
    if suffix in TORCH_SUFFIXES:
        return "torch"
    raise WeightsPathError(
        f"--weights {str(path)!r}: give a .safetensors file (preferred) or a .pt/.pth file "
        "(torch.save, loaded with weights_only=True)"
    )


def check_writable(raw: str) -> Path:
    """``raw`` as a path the weights can be written to, or :class:`WeightsPathError` saying why.

    Nothing is left behind: the directory is probed with a temporary file that is removed.
    """
    path = Path(os.path.expanduser(raw))
    _format(path)
    if path.is_dir():
        raise WeightsPathError(f"--weights {raw!r} is a directory; give a file name inside it")
    parent = path.parent
    if not parent.is_dir():
        raise WeightsPathError(
            f"--weights {raw!r}: the directory {str(parent)!r} does not exist (create it first)"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise WeightsPathError(f"--weights {raw!r}: the file exists and is not writable")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".keras2torch-probe-"):
            pass
    except OSError as error:
        raise WeightsPathError(
            f"--weights {raw!r}: cannot write in {str(parent)!r} ({error.strerror or error})"
        ) from None
    return path


def write(state_dict: dict, path: Path) -> None:
    """Write atomically (temporary file + rename): a failure keeps any previous file intact."""
    kind = _format(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if kind == "safetensors":
        from safetensors.torch import save_file

        atomic_write(
            path,
            lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", "generator": "kerastorch_magic"}),
        )
    else:
        import torch

        atomic_write(path, lambda tmp: torch.save(tensors, tmp))


def atomic_write(path: Path, write_to) -> None:
    """``write_to(temporary path)`` in ``path``'s directory, then rename it to ``path``.

    Readers see the old file or the new one, never half of one; on failure the temporary file is
    removed. The file gets the usual permissions (``mkstemp`` makes it private to its owner).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_to(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _literal(text: str) -> str:
    """A double-quoted Python string literal (JSON escapes are valid Python)."""
    return json.dumps(text, ensure_ascii=False)


def loading_lines(instance: str, class_name: str, path: Path | None, raw_path: str | None):
    """(extra import line or None, lines that load the weights into ``instance``)."""
    if path is None:
        return None, [
            "# The Keras weights, kept in this kernel by %%keras2torch (gone after a restart: re-run",
            "# the source cell, or give it --weights PATH to load them from a file instead).",
            f"{instance}.load_state_dict(globals()[{_literal(STORE_NAME)}][{_literal(class_name)}])",
        ]
    shown = raw_path if raw_path and not raw_path.startswith("~") else str(path)
    import_line, state = load_expression(path, _literal(shown))
    return import_line, [
        "# The Keras weights, written by %%keras2torch --weights (survives a kernel restart).",
        f"{instance}.load_state_dict({state})",
    ]


def load_expression(path: Path, source: str) -> tuple[str, str]:
    """(import line, expression reading the state_dict from ``source``, a Python expression)."""
    if _format(path) == "safetensors":
        return "from safetensors.torch import load_file", f"load_file({source})"
    return "import torch", f"torch.load({source}, weights_only=True)"
