"""Import Keras without TensorFlow's C++ start-up lines on stderr.

TensorFlow (2.20+) logs through absl. While its shared libraries load, before anything has called
``absl::InitializeLog()``, absl writes every message to file descriptor 2 whatever
``TF_CPP_MIN_LOG_LEVEL`` says: ``WARNING: All log messages before absl::InitializeLog() ...``,
then INFO lines such as oneDNN's "custom operations are on" and "Could not find cuda drivers".
In a notebook, ipykernel forwards descriptor 2 to the cell's output: a red stderr box in the first
cell of every notebook, although the notebook set the variable before ``import keras``.

:func:`import_keras` imports Keras (hence TensorFlow) with descriptor 2 redirected to a temporary
file, then writes back every line that ``TF_CPP_MIN_LOG_LEVEL`` does not exclude (TensorFlow's
meaning: 1 drops INFO, 2 also WARNING, 3 also ERROR; unset or 0 keeps everything). Other text
comes back too, unless it continues a dropped message (absl messages can span several lines).
The package's ``__init__`` calls it before anything else imports Keras, so ``%load_ext
kerastorch_magic`` or ``import kerastorch_magic`` before ``import keras`` keeps a notebook's first
cell free of those lines.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from contextlib import contextmanager

# An absl log line: severity letter, MMDD, time, thread id, file:line]. E.g.
# "I0000 00:00:1796062826.899039   10528 port.cc:153] oneDNN custom operations are on..."
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ [^\]\s]+:\d+\] ")
_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}


def min_log_level(environ=os.environ) -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it (0 when unset or not a number)."""
    try:
        return int(environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def filter_startup_log(text: str, level: int) -> str:
    """``text`` without the absl lines below ``level`` (and absl's preamble once level >= 1).

    A message continues on the lines after its header line (e.g. the list of CPU instructions), so
    those go with it. FATAL lines are always kept.
    """
    if level <= 0:
        return text
    kept, keep_current = [], True
    for line in text.splitlines(keepends=True):
        header = _ABSL_LINE.match(line)
        if header:
            keep_current = _SEVERITY[header.group(1)] >= min(level, 3)
        elif line.rstrip("\n") == _PREAMBLE:
            keep_current = False
        if keep_current:
            kept.append(line)
    return "".join(kept)


@contextmanager
def _stderr_descriptor_filtered(level: int):
    """Descriptor 2 goes to a temporary file meanwhile; what the filter keeps is written back."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = filter_startup_log(sink.read().decode("utf-8", "replace"), level)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


def import_keras():
    """``import keras``, with TensorFlow's start-up log filtered by ``TF_CPP_MIN_LOG_LEVEL``.

    A no-op beyond the import when Keras is imported already (its start-up lines are long gone).
    """
    if "keras" in sys.modules:
        return sys.modules["keras"]
    with _stderr_descriptor_filtered(min_log_level()):
        import keras
    return keras
