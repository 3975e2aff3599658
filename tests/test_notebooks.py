"""The workshop notebooks, executed end to end on a real kernel (the venv's Python).

Each notebook runs with nbclient the way a person runs it in JupyterLab: cells in order, and every
cell that ``%%keras2torch`` hands to the frontend (``set_next_input``) inserted below its magic cell
and executed (scripts/jupyterlab_cells.py). Any error fails the test. The quickstart's generated
classes are checked against their Keras models (in the notebook, and their reports here).

The quickstart runs through ``bash scripts/quickstart.sh --no-setup`` (the README's main job), which
writes out/01_quickstart.{ipynb,html}; the others' executed copies go to test-artifacts/notebooks/.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
sys.path.insert(0, str(ROOT / "scripts"))

from jupyterlab_cells import METADATA_KEY, install  # noqa: E402

ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
QUICKSTART = "01_quickstart.ipynb"
# The three Keras models of the guide (shared/seed), as the quickstart names their ports.
QUICKSTART_CLASSES = ["SameConv", "SequentialCNN", "ConvBN"]


def kernel_env() -> dict[str, str]:
    """The kernel's environment: this checkout importable first, TensorFlow quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    return env


def execute(name: str) -> tuple[nbformat.NotebookNode, float]:
    """Execute notebooks/<name> (raising on any cell error); returns it and the seconds it took."""
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name="python3",  # resolves to this interpreter: jupyter_client maps "python" to it
        timeout=600,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    install(client)
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env())
    finally:
        seconds = time.perf_counter() - start
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, ARTIFACTS / name)
    return notebook, seconds


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


# -- execution ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_main_job_and_each_generated_class_matches_keras(capsys):
    """``bash scripts/quickstart.sh`` (the README's main job, set-up step skipped) on the quickstart."""
    if not (ROOT / ".venv" / "bin" / "jupyter").exists():
        pytest.skip("scripts/quickstart.sh runs the project's .venv (made by scripts/setup.sh)")
    for stale in ("01_quickstart.ipynb", "01_quickstart.html"):
        (ROOT / "out" / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    result = subprocess.run(
        ["bash", "scripts/quickstart.sh", "--no-setup"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    report(capsys, f"{QUICKSTART} (bash scripts/quickstart.sh --no-setup)", time.perf_counter() - start)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "out/01_quickstart.html" in result.stdout

    notebook = nbformat.read(ROOT / "out" / QUICKSTART, as_version=4)
    cells = notebook.cells
    inserted = [i for i, c in enumerate(cells) if METADATA_KEY in c.metadata]
    # One generated cell per magic cell, right below it, defining the class it was asked for.
    assert len(inserted) == len(QUICKSTART_CLASSES), "each %%keras2torch run inserted one cell"
    for index, class_name in zip(inserted, QUICKSTART_CLASSES):
        magic, generated = cells[index - 1], cells[index]
        assert magic.source.startswith("%%keras2torch") and f"--name {class_name}" in magic.source
        assert f"class {class_name}(nn.Module):" in generated.source
        assert generated.metadata[METADATA_KEY]["inserted_from"] == magic.id
        assert generated.execution_count is not None, "the generated cell ran"
        # The magic also shows the code and the comparison in its own output (HTML exports keep it).
        assert f"class {class_name}(nn.Module)" in text_of(magic)
        assert "compared layer outputs match" in text_of(magic)
    # The check cell after each generated one compared the PyTorch instance with Keras.
    reports = re.findall(r"(\w+): max \|Keras - PyTorch\| = ([0-9.e+-]+)", "".join(text_of(c) for c in cells))
    assert [name for name, _ in reports] == QUICKSTART_CLASSES
    for name, value in reports:
        assert float(value) < 1e-4, f"{name} differs from its Keras model by {value}"

    # The HTML copy: self-contained, with the generated classes and the comparisons' static tables.
    html = (ROOT / "out" / "01_quickstart.html").read_text()
    for class_name in QUICKSTART_CLASSES:
        assert f'<span class="nc">{class_name}</span>' in html  # highlighted class statement
    assert html.count("compared layer outputs match") >= len(QUICKSTART_CLASSES)
    assert "application/vnd.jupyter.widget-view+json" not in html  # no empty widget placeholders


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n != QUICKSTART])
def test_notebook_executes(name, capsys):
    notebook, seconds = execute(name)
    report(capsys, name, seconds)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
