"""``python -m kerastorch_magic``: the ``keras2torch`` command line (:mod:`kerastorch_magic.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
