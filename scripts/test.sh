#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run every test: the extension's jest unit tests, then pytest
# (converters, magic on real kernels, widget, notebooks, and UI tests in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The venv's bin first: the Node.js that setup.sh put there, if the machine's was missing or old.
export PATH="$PWD/.venv/bin:$PATH"
(cd labextension && npm test --silent)
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
