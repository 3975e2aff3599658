"""The JupyterLab extension ships prebuilt in the wheel: installed into a fresh virtual
environment (no node there, no build step), ``jupyter labextension list`` shows it enabled
and OK.

What this does, and why it is honest:
1. copies the source tree (tracked + untracked-not-ignored files, so no prior build output)
   to a temporary directory; ``labextension/node_modules``, when present, is copied as hard
   links only to skip re-downloading npm packages (npm replaces a symlinked one);
2. builds the wheel from that copy as ``pip install .`` does (``pip wheel --no-deps``, with
   build isolation: the build backend and ``jupyter-builder`` come from the package index); the
   hatch-jupyter-builder hook runs ``npm install`` + ``npm run build:prod``;
3. checks the wheel's ``share/jupyter/labextensions/kerastorch-magic`` payload;
4. creates a fresh venv, installs the wheel (``--no-deps``: the package's heavy runtime
   dependencies, TensorFlow and torch, are irrelevant to the frontend) and
   ``jupyterlab==<the version in this environment>`` from the package index, and runs its
   ``jupyter labextension list``.
About a minute on two cores, most of it installing JupyterLab into the fresh venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXT_NAME = "kerastorch-magic"
SHARE = f"share/jupyter/labextensions/{EXT_NAME}"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(
            f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def _copy_sources(dest: Path) -> None:
    """The source tree as a fresh checkout would have it (no built extension)."""
    files: list[str] | None = None
    if shutil.which("git") and (ROOT / ".git").exists():
        proc = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
        )
        if proc.returncode == 0:
            files = [f for f in proc.stdout.decode().split("\0") if f]
    if files is None:
        ignore = shutil.ignore_patterns(
            ".git",
            ".venv",
            "node_modules",
            "lib",
            "__pycache__",
            "build",
            "dist",
            "test-artifacts",
            "*.egg-info",
        )
        shutil.copytree(ROOT, dest, ignore=ignore, dirs_exist_ok=True)
        shutil.rmtree(dest / "kerastorch_magic" / "labextension", ignore_errors=True)
        return
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("building the wheel needs node and npm (users of the wheel do not)")
    work = tmp_path_factory.mktemp("labext-wheel")
    src = work / "src"
    _copy_sources(src)
    assert not (src / "kerastorch_magic" / "labextension").exists()
    node_modules = ROOT / "labextension" / "node_modules"
    if node_modules.is_dir():
        target = src / "labextension" / "node_modules"
        try:
            shutil.copytree(node_modules, target, symlinks=True, copy_function=os.link)
        except OSError:  # another file system: npm install downloads instead
            shutil.rmtree(target, ignore_errors=True)
    env = dict(os.environ)
    dist = work / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            str(src),
            "-w",
            str(dist),
        ],
        env=env,
        cwd=work,
    )
    wheels = list(dist.glob("kerastorch_magic-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_prebuilt_extension(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        prefix = next((n.split(SHARE)[0] for n in names if n.endswith(f"{SHARE}/package.json")), None)
        assert prefix is not None, f"no {SHARE}/package.json in {wheel.name}"
        base = prefix + SHARE
        pkg = json.loads(zf.read(f"{base}/package.json"))
        install = json.loads(zf.read(f"{base}/install.json"))
        ext_files = [n[len(base) + 1 :] for n in names if n.startswith(base + "/")]

    assert pkg["name"] == EXT_NAME
    build = pkg["jupyterlab"]["_build"]
    assert build["load"] in ext_files  # static/remoteEntry.<hash>.js
    assert "static/style.js" in ext_files
    assert f"schemas/{EXT_NAME}/plugin.json" in ext_files
    assert not any(f.endswith(".ts") for f in ext_files)
    assert install == {
        "packageManager": "python",
        "packageName": "kerastorch_magic",
        "uninstallInstructions": install["uninstallInstructions"],
    }
    # One version for the Python package and its extension.
    src_pkg = json.loads((ROOT / "labextension" / "package.json").read_text())
    assert pkg["version"] == src_pkg["version"]
    assert re.search(rf"-{re.escape(src_pkg['version'])}-", wheel.name), wheel.name
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1024:.0f} KiB")


def test_labextension_list_in_fresh_venv(wheel: Path, tmp_path):
    import jupyterlab

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    _run([str(py), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)])
    _run([str(py), "-m", "pip", "install", "--quiet", f"jupyterlab=={jupyterlab.__version__}"])

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "PYTHONPATH"))}
    # Nothing from this checkout or the user's Jupyter dirs may leak in.
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "data")
    proc = _run([str(bindir / "jupyter"), "labextension", "list"], env=env, cwd=tmp_path)
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    line = next((ln for ln in text.splitlines() if EXT_NAME in ln), None)
    assert line is not None, text
    assert re.search(rf"{EXT_NAME} v\S+ enabled\s+OK \(python, kerastorch_magic\)", line), line
    assert str(venv) in text  # found in the venv's share/jupyter/labextensions
