"""Refresh (``--write``) or check (``--check``) README.md's "What converts and what does not" table.

    .venv/bin/python scripts/layer_catalogue.py --write

The table is generated from ``kerastorch_magic/converters/refused.py``.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kerastorch_magic.converters import refused  # noqa: E402

if __name__ == "__main__":
    sys.exit(refused.main(sys.argv[1:]))
