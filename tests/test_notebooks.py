"""The workshop notebooks, executed end to end on a real kernel (the venv's Python), headless.

Each notebook runs with plain nbclient, as ``jupyter nbconvert --execute`` and papermill run it: cells
in order, nothing inserted (nbclient ignores ``set_next_input``), so every name a later cell uses
must be defined by the cells that are stored (``%%keras2torch`` defines the class and instance it
generates). No cell may show an error or write to stderr, unless it is tagged ``raises-exception``
(nbclient's own tag for a cell that is about an error). The quickstart's generated classes are
checked against their Keras models (in the notebook, and their reports here).

Every ``notebooks/*.ipynb`` is picked up. The quickstart runs through ``bash scripts/quickstart.sh
--no-setup`` (the README's main job), which writes out/01_quickstart.{ipynb,html}; the others'
executed copies go to test-artifacts/notebooks/.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"

ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
QUICKSTART = "01_quickstart.ipynb"
# The three Keras models of the guide (shared/seed), as the quickstart names their ports.
QUICKSTART_CLASSES = ["SameConv", "SequentialCNN", "ConvBN"]
ERROR_TAG = "raises-exception"


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this checkout importable first. TensorFlow's log level is left as
    the notebooks set it (their first cell does), so the test sees what a user sees."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def execute(name: str) -> tuple[nbformat.NotebookNode, float]:
    """Execute notebooks/<name> with plain nbclient; returns it (executed) and the seconds it took.

    A cell error does not raise here: the executed notebook is written to test-artifacts/ and
    :func:`problems` reports every error and stderr output at once.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",  # resolves to this interpreter: jupyter_client maps "python" to it
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env())
    except CellExecutionError:
        pass  # the error output is in the notebook
    finally:
        seconds = time.perf_counter() - start
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, ARTIFACTS / name)
    return notebook, seconds


def problems(notebook) -> list[str]:
    """Error and stderr outputs of cells that are not tagged as being about an error."""
    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or ERROR_TAG in cell.metadata.get("tags", []):
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found.append(f"{cell.id}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                found.append(f"{cell.id}: stderr: {output.text[:1500]}")
    return found


def report(capsys, name: str, seconds: float) -> None:
    with capsys.disabled():
        print(f"\n[notebook] {name}: executed in {seconds:.1f} s")


def text_of(cell) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(str(output.data.get("text/plain", "")))
    return "".join(parts)


# -- stored form: cheap checks, no kernel -----------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_stored_clean(name):
    """Outputs are not committed; nbformat 4.5 with cell ids; the venv's python3 kernel."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert (notebook.nbformat, notebook.nbformat_minor) >= (4, 5)
    assert notebook.metadata.kernelspec.name == "python3"
    for cell in notebook.cells:
        assert cell.get("id"), "every cell has an id"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"outputs stored in {cell.id}"


def test_expected_notebooks_exist():
    for name in (QUICKSTART, "02_pitfalls.ipynb", "03_functional.ipynb", "04_train_side_by_side.ipynb"):
        assert name in ALL


def test_quickstart_converts_the_three_guide_models_with_the_magic():
    notebook = nbformat.read(NOTEBOOKS / QUICKSTART, as_version=4)
    sources = [c.source for c in notebook.cells if c.cell_type == "code"]
    assert any(re.search(r"^%load_ext kerastorch_magic$", s, re.M) for s in sources)
    names = [m.group(1) for s in sources if (m := re.match(r"%%keras2torch\b.*--name (\w+)", s))]
    assert names == QUICKSTART_CLASSES


def declared_distributions() -> set[str]:
    """Distributions that ``pip install kerastorch_magic[notebooks,tensorflow]`` asks for by name."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *extras["notebooks"], *extras["tensorflow"]]
    return {canonical(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in requirements}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(notebook) -> set[str]:
    """Top-level modules the notebook's code cells import (IPython magics left out)."""
    import ast

    modules = set()
    for cell in notebook.cells:
        if cell.cell_type != "code" or cell.source.startswith("%%"):
            continue
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


@pytest.mark.parametrize("name", ALL)
def test_notebook_needs_only_declared_packages(name):
    """What a notebook imports comes with ``pip install kerastorch_magic[notebooks]`` (plus a Keras
    backend, the ``tensorflow`` extra): no ModuleNotFoundError for a participant."""
    import sys
    from importlib.metadata import packages_distributions

    providers = packages_distributions()
    declared = declared_distributions() | {"kerastorch-magic"}
    undeclared = {}
    for module in sorted(imported_modules(nbformat.read(NOTEBOOKS / name, as_version=4))):
        if module in sys.stdlib_module_names or module == "kerastorch_magic":
            continue
        dists = {canonical(d) for d in providers.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert undeclared == {}, f"declare them in pyproject.toml's notebooks extra: {undeclared}"


# -- execution ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_main_job_and_each_generated_class_matches_keras(capsys):
    """``bash scripts/quickstart.sh`` (the README's main job, set-up step skipped) on the quickstart:
    plain ``jupyter nbconvert --execute``, which never runs (nor inserts) a generated cell."""
    if not (ROOT / ".venv" / "bin" / "jupyter").exists():
        pytest.skip("scripts/quickstart.sh runs the project's .venv (made by scripts/setup.sh)")
    for stale in ("01_quickstart.ipynb", "01_quickstart.html"):
        (ROOT / "out" / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    result = subprocess.run(
        ["bash", "scripts/quickstart.sh", "--no-setup"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=kernel_env(),
    )
    report(capsys, f"{QUICKSTART} (bash scripts/quickstart.sh --no-setup)", time.perf_counter() - start)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "out/01_quickstart.html" in result.stdout

    notebook = nbformat.read(ROOT / "out" / QUICKSTART, as_version=4)
    stored = nbformat.read(NOTEBOOKS / QUICKSTART, as_version=4)
    assert [c.id for c in notebook.cells] == [c.id for c in stored.cells], "no cell was inserted"
    assert problems(notebook) == []
    magic_cells = [c for c in notebook.cells if c.source.startswith("%%keras2torch")]
    assert len(magic_cells) == len(QUICKSTART_CLASSES)
    for cell, class_name in zip(magic_cells, QUICKSTART_CLASSES):
        assert f"--name {class_name}" in cell.source
        text = text_of(cell)
        # The magic shows the code and the comparison in its own output (HTML exports keep them)
        # and defines the class and its instance (the check cells use them).
        assert f"class {class_name}(nn.Module)" in text
        assert f"{class_name} (class) and " in text and " are defined" in text
        assert "compared layer outputs match" in text
    # The check cell after each magic cell compared the PyTorch instance with Keras.
    cells = notebook.cells
    reports = re.findall(r"(\w+): max \|Keras - PyTorch\| = ([0-9.e+-]+)", "".join(text_of(c) for c in cells))
    assert [name for name, _ in reports] == QUICKSTART_CLASSES
    for name, value in reports:
        assert float(value) < 1e-4, f"{name} differs from its Keras model by {value}"

    # The HTML copy: self-contained, with the generated classes and the comparisons' static tables.
    html = (ROOT / "out" / "01_quickstart.html").read_text()
    for class_name in QUICKSTART_CLASSES:
        assert f"class {class_name}(nn.Module):" in html
    assert html.count("compared layer outputs match") >= len(QUICKSTART_CLASSES)
    assert "application/vnd.jupyter.widget-view+json" not in html  # no empty widget placeholders


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n != QUICKSTART])
def test_notebook_executes_without_errors_or_stderr(name, capsys):
    notebook, seconds = execute(name)
    report(capsys, name, seconds)
    assert problems(notebook) == [], f"executed copy: {ARTIFACTS / name}"
