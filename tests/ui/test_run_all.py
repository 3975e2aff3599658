"""The workshop notebooks under JupyterLab's "Restart Kernel and Run All Cells…", with the extension.

Run All sends every cell's execute request up front, so a cell inserted during the run (the
generated cell) is not run by it: the notebook works only because ``%%keras2torch`` defines the
class and instance itself. No cell may show an error or write to stderr. Running it a second time
(the generated cells now stored in the notebook, and run too) must not duplicate them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from nbdriver import PLUGIN_ID, NotebookDriver
from playwright.sync_api import expect

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
RUN_ALL_TIMEOUT_S = 300

# Every code cell: id, source, execution count, and its outputs (type, stream name, error).
_OUTPUTS = """
const panel = window.jupyterapp.shell.currentWidget;
return panel.content.model.sharedModel.cells.filter(c => c.cell_type === 'code').map(c => ({
  id: c.id,
  source: c.getSource(),
  k2t: c.getMetadata('keras2torch') ?? null,
  execution_count: c.execution_count,
  outputs: c.getOutputs().map(o => ({
    type: o.output_type,
    name: o.name ?? null,
    text: o.output_type === 'error' ? `${o.ename}: ${o.evalue}`
      : (o.output_type === 'stream' ? String(o.text).slice(0, 500) : ''),
  })),
}));
"""


def code_cells(nb: NotebookDriver) -> list[dict]:
    return nb.js(_OUTPUTS)


def problems(cells: list[dict]) -> list[str]:
    return [
        f"{cell['id']}: {output['text']}"
        for cell in cells
        for output in cell["outputs"]
        if output["type"] == "error" or (output["type"] == "stream" and output["name"] == "stderr")
    ]


def restart_and_run_all(nb: NotebookDriver) -> list[dict]:
    """The palette command and its confirmation, as a user does; returns the code cells once the
    last stored cell ran (or a cell failed, which stops Run All) and the kernel is idle."""
    stored = [c for c in code_cells(nb) if c["k2t"] is None]
    last_id, last_count = stored[-1]["id"], stored[-1]["execution_count"]
    nb.palette("Restart Kernel and Run All Cells…")
    nb.page.get_by_role("button", name="Confirm Kernel Restart").click()
    deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
    while time.monotonic() < deadline:
        cells = code_cells(nb)
        last = next(c for c in cells if c["id"] == last_id)
        finished = last["execution_count"] not in (None, last_count)
        if (finished or problems(cells)) and nb.kernel_idle():
            nb.settle(1.0)  # late comm replies: the generated cells' upserts
            return code_cells(nb)
        time.sleep(0.5)
    raise AssertionError(f"Run All did not finish in {RUN_ALL_TIMEOUT_S} s: {problems(code_cells(nb))}")


def show(nb: NotebookDriver, cell_id: str) -> None:
    """Scroll to a cell and wait until the windowed notebook has drawn it."""
    node = nb.cell_node(cell_id)
    node.scroll_into_view_if_needed()
    expect(node.locator(".jp-InputArea-editor")).to_be_visible()
    nb.page.wait_for_timeout(500)


def open_copy(lab, page, name: str) -> NotebookDriver:
    shutil.copy(NOTEBOOKS / name, lab.root_dir / name)
    nb = NotebookDriver(page, lab.url, name)
    nb.open()
    assert nb.plugin_active(PLUGIN_ID)
    return nb


def test_quickstart_restart_and_run_all(lab, page):
    nb = open_copy(lab, page, "01_quickstart.ipynb")
    magic_ids = [c["id"] for c in code_cells(nb) if c["source"].startswith("%%keras2torch")]
    assert len(magic_ids) == 3

    for attempt in ("first", "again"):
        cells = restart_and_run_all(nb)
        assert problems(cells) == [], f"Run All ({attempt})"
        ids = [c["id"] for c in cells]
        for magic_id in magic_ids:
            marker = f"# keras2torch: generated from cell {magic_id},"
            generated = [c for c in cells if c["source"].startswith(marker)]
            assert len(generated) == 1, f"one generated cell per magic cell ({attempt})"
            assert ids.index(generated[0]["id"]) == ids.index(magic_id) + 1, "right below its magic cell"
        reports = [o["text"] for c in cells for o in c["outputs"] if "max |Keras - PyTorch|" in o["text"]]
        assert len(reports) == 3, reports
        show(nb, magic_ids[-1])
        nb.screenshot(f"run-all-{attempt}")
    # The comparison widget rendered under the magic cells.
    expect(nb.cell_node(magic_ids[0]).locator(".k2t-widget").first).to_be_visible()


def test_functional_restart_and_run_all(lab, page):
    nb = open_copy(lab, page, "03_functional.ipynb")
    cells = restart_and_run_all(nb)
    assert problems(cells) == []
    assert all(c["execution_count"] is not None for c in cells), "every cell ran"
    show(nb, cells[-1]["id"])
    nb.screenshot("run-all")
