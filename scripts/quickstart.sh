#!/usr/bin/env bash
# The README's main job: set up (scripts/setup.sh), then execute notebooks/01_quickstart.ipynb
# headlessly on the venv's kernel with plain `jupyter nbconvert --execute` and write
# out/01_quickstart.html. Nothing special is needed: %%keras2torch defines the class and instance it
# generates, and its output carries the generated code and the comparison.
#
#   bash scripts/quickstart.sh            # set up, run, write out/01_quickstart.html
#   bash scripts/quickstart.sh --no-setup # skip the set-up step (already done)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--no-setup" ]; then
  bash scripts/setup.sh
fi

export KERAS_BACKEND="${KERAS_BACKEND:-tensorflow}"
mkdir -p out
start=$(date +%s)
# The kernel is "python3", which jupyter_client resolves to the interpreter running nbconvert:
# the venv's. It runs in notebooks/ and imports this checkout's kerastorch_magic. Widget state is
# not stored, so the HTML shows each comparison's static table (self-contained, no widget
# JavaScript fetched from a CDN) instead of an empty widget placeholder.
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
# Drop the kernel's note on its local TCP transport and nbclient's note that nothing here answers
# the magic's comm (that is the JupyterLab extension's job); keep everything else.
quiet() {
  grep -v -E "Kernel is running over TCP|No handler found for comm target 'keras2torch'|^\s*$" >&2 || true
}
.venv/bin/jupyter nbconvert --execute --to notebook --output-dir out \
  --ExecutePreprocessor.timeout=600 --ExecutePreprocessor.store_widget_state=False \
  notebooks/01_quickstart.ipynb 2>&1 | quiet
.venv/bin/jupyter nbconvert --to html out/01_quickstart.ipynb 2>&1 | quiet
echo
echo "Quickstart executed in $(($(date +%s) - start)) s."
echo "  HTML (generated code and comparisons): $(pwd)/out/01_quickstart.html"
echo "  Executed notebook:                     $(pwd)/out/01_quickstart.ipynb"
echo "Work through it in JupyterLab:  .venv/bin/jupyter lab notebooks/01_quickstart.ipynb"
