#!/usr/bin/env bash
# Set up a fresh Debian machine for kerastorch_magic: system Chromium (UI tests), a .venv with
# CPU PyTorch + TensorFlow, the package itself (its build compiles the JupyterLab extension with
# npm) and the test tools. Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  # `env` carries the variable whether or not sudo is used: after an empty $SUDO, a bare
  # `DEBIAN_FRONTEND=... apt-get` would not be an assignment but a command name.
  SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The extension builds with Node >= 20 (the package build below runs npm). Debian 12's own nodejs
# is 18, so a missing or older Node is an error to fix by hand (e.g. NodeSource or nvm).
if ! node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
  echo "scripts/setup.sh: Node.js >= 20 with npm is needed to build the JupyterLab extension" >&2
  exit 1
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip install --upgrade pip
# Torch first, pinned: this machine serves a CPU build of 2.13.0 from disk, while a bare `torch`
# requirement would pull a multi-GB CUDA build. TensorFlow likewise as the CPU wheel.
pip install torch==2.13.0 tensorflow-cpu==2.21.0
# npm ci first: the package build's own `npm install` then finds node_modules complete.
(cd labextension && npm ci --no-audit --no-fund --loglevel=error)
pip install -e ".[test]"
.venv/bin/jupyter labextension list 2>&1 | grep -i kerastorch || true
