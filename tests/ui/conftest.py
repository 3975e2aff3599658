"""Fixtures for the UI tests: real ``jupyter lab`` servers driven by headless system Chromium.

Each server runs from this venv with a throw-away root dir, config, data, runtime, settings and
workspaces directories, on a fixed port of 127.0.0.1 (``K2T_UI_PORT``, default 18765, and the next
one; the next free one if another test session holds it), without token or password. Kernels
import ``kerastorch_magic`` from this checkout (``PYTHONPATH``).

* ``lab`` serves this checkout's built extension (``kerastorch_magic/labextension``, made by
  ``npm run build`` in ``labextension/`` or by ``pip install -e .``) through
  ``LabServerApp.extra_labextensions_path``, which takes precedence over an installed copy: the
  tests exercise the current build.
* ``lab_without_extension`` disables ``kerastorch-magic`` in its own ``labconfig/page_config.json``
  (what ``jupyter labextension disable`` writes), for the ``set_next_input`` fallback scenario.

Screenshots go to ``test-artifacts/ui/`` (one per step, plus ``FAILED-<test>.png``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILT_EXTENSION = ROOT / "kerastorch_magic" / "labextension"
EXT_NAME = "kerastorch-magic"
PLUGIN_ID = "kerastorch-magic:plugin"
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("K2T_CHROMIUM", "/usr/bin/chromium")
PORT = int(os.environ.get("K2T_UI_PORT", "18765"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def pytest_collection_modifyitems(config, items):
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "the playwright Python package is not installed"
    if reason is None and not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set K2T_CHROMIUM)"
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _seed():
    """Overrides the root conftest's seeding: no Keras runs in this process (kernels do)."""
    yield


# -- servers ---------------------------------------------------------------------------------------
_RUNNING: list[LabServer] = []


@pytest.fixture(autouse=True)
def _shutdown_kernels():
    """Each test's kernels (TensorFlow + torch, ~1 GB each) stop when the test ends."""
    yield
    for server in _RUNNING:
        server.shutdown_kernels()


class LabServer:
    """A ``jupyter lab`` subprocess with everything it writes under ``base``."""

    def __init__(self, base: Path, port: int, extension: bool):
        self.base = base
        self.port = port
        self.extension = extension
        self.url = f"http://127.0.0.1:{port}"
        self.root_dir = base / "root"
        self.log_path = base / "server.log"
        self.proc: subprocess.Popen | None = None

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        dirs = {
            name: self.base / name
            for name in ("root", "config", "data", "runtime", "settings", "workspaces", "labext")
        }
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        # No news / update-check notification popping over the notebook.
        settings = dirs["settings"] / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True, exist_ok=True)
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"checkForUpdates": False, "fetchNews": "false"})
        )
        args = [
            sys.executable,
            "-m",
            "jupyterlab",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.open_browser=False",
            f"--ServerApp.root_dir={dirs['root']}",
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True",
            "--ServerApp.allow_root=True",
            f"--LabApp.user_settings_dir={dirs['settings']}",
            f"--LabApp.workspaces_dir={dirs['workspaces']}",
            "--LabApp.expose_app_in_browser=True",
            "--JupyterNotebookApp.expose_app_in_browser=True",
        ]
        if self.extension:
            (dirs["labext"] / EXT_NAME).symlink_to(BUILT_EXTENSION, target_is_directory=True)
            args.append(f"--LabServerApp.extra_labextensions_path={dirs['labext']}")
        else:
            # An installed copy (pip install .) must not answer either.
            labconfig = dirs["config"] / "labconfig"
            labconfig.mkdir(parents=True, exist_ok=True)
            (labconfig / "page_config.json").write_text(json.dumps({"disabledExtensions": {EXT_NAME: True}}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        env.update(
            JUPYTER_CONFIG_DIR=str(dirs["config"]),
            JUPYTER_DATA_DIR=str(dirs["data"]),
            JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
            JUPYTER_PLATFORM_DIRS="1",
            PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            TF_CPP_MIN_LOG_LEVEL="3",
            PYTHONUNBUFFERED="1",
        )
        env.setdefault("KERAS_BACKEND", "tensorflow")
        return args, env

    def start(self, timeout: float = 90) -> None:
        # The fixed port, or the next free one when another test session holds it.
        for port in range(self.port, self.port + 50):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) != 0:
                    break
        else:
            raise RuntimeError(f"no free port in {self.port}..{self.port + 49}; set K2T_UI_PORT")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        args, env = self._prepare()
        log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=self.base,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._log = log
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as resp:
                    if resp.status == 200:
                        _RUNNING.append(self)
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"jupyter lab did not answer within {timeout}s:\n{self.log_tail()}")

    def _api(self, method: str, path: str):
        request = urllib.request.Request(f"{self.url}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            for kernel in self._api("GET", "/api/kernels") or []:
                self._api("DELETE", f"/api/kernels/{kernel['id']}")
        except OSError:
            pass

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # jupyter's clean shutdown: kernels too
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        # Kernels started by this server live in its process group (start_new_session).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        self.proc = None
        if self in _RUNNING:
            _RUNNING.remove(self)
        shutil.copy(self.log_path, ARTIFACTS / f"server-{'ext' if self.extension else 'noext'}.log")

    def write_notebook(self, name: str, sources: list[str]) -> Path:
        import nbformat

        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
        path = self.root_dir / name
        nbformat.write(nb, path)
        return path


def _server(tmp_path_factory, port: int, extension: bool):
    if extension and not (BUILT_EXTENSION / "package.json").exists():
        pytest.fail(
            f"the extension is not built ({BUILT_EXTENSION} is missing): run `npm run build` in "
            "labextension/ (or `pip install -e .`)"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server = LabServer(tmp_path_factory.mktemp("lab-ext" if extension else "lab-noext"), port, extension)
    server.start()
    return server


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    server = _server(tmp_path_factory, PORT, extension=True)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lab_without_extension(tmp_path_factory):
    server = _server(tmp_path_factory, PORT + 1, extension=False)
    yield server
    server.stop()


# -- browser ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
    page.k2t_console = console  # type: ignore[attr-defined]
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        try:
            page.screenshot(path=str(ARTIFACTS / f"FAILED-{request.node.name}.png"), full_page=True)
        except Exception:  # noqa: BLE001 - best effort
            pass
        (ARTIFACTS / f"FAILED-{request.node.name}.console.txt").write_text("\n".join(console))
    context.close()
