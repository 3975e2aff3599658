"""Drive one JupyterLab notebook in Playwright: real keyboard and mouse for what a user does
(select, run, type, palette, context menu), the exposed ``window.jupyterapp`` only to read state
(cells, metadata, execution) and to wait for it."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Page, expect

PLUGIN_ID = "kerastorch-magic:plugin"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
RUN_TIMEOUT_MS = 150_000  # first conversion imports TensorFlow + torch on a 2-core runner

# The notebook panel in the main area.
_PANEL = """
const app = window.jupyterapp;
const panel = app && app.shell.currentWidget;
const ok = !!(panel && panel.content && panel.content.model && panel.sessionContext);
"""

_CELLS = (
    _PANEL
    + """
if (!ok) return null;
return panel.content.model.sharedModel.cells.map((c, i) => {
  const w = panel.content.widgets[i];
  return {
    id: c.id,
    type: c.cell_type,
    source: c.getSource(),
    k2t: c.getMetadata('keras2torch') ?? null,
    execution_count: c.cell_type === 'code' ? c.execution_count : null,
    output_types: c.cell_type === 'code' ? c.getOutputs().map(o => o.output_type) : [],
    errors: c.cell_type === 'code'
      ? c.getOutputs().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue)
      : [],
    classes: w ? Array.from(w.node.classList) : [],
    running: w && w.model.executionState === 'running',
  };
});
"""
)


@dataclass
class Cell:
    id: str
    type: str
    source: str
    k2t: dict | None
    execution_count: int | None
    output_types: list[str]
    errors: list[str]
    classes: list[str]
    running: bool

    @property
    def generated(self) -> bool:
        return self.source.startswith("# keras2torch: generated from cell ")


class NotebookDriver:
    """``app``: "lab" (JupyterLab, /lab/tree/...) or "notebook" (Notebook 7, /notebooks/...)."""

    def __init__(self, page: Page, base_url: str, name: str, app: str = "lab"):
        assert app in ("lab", "notebook"), app
        self.page = page
        self.base_url = base_url
        self.name = name
        self.app = app
        self.shots = 0

    # -- state -------------------------------------------------------------------------------------
    def js(self, body: str, arg=None):
        return self.page.evaluate(f"(arg) => {{ {body} }}", arg)

    def wait_js(self, body: str, arg=None, timeout_ms: float = 30_000) -> None:
        self.page.wait_for_function(f"(arg) => {{ {body} }}", arg=arg, timeout=timeout_ms)

    def cells(self) -> list[Cell]:
        data = self.js(_CELLS)
        assert data is not None, "no notebook panel is active"
        return [Cell(**c) for c in data]

    def cell(self, cell_id: str) -> Cell:
        for c in self.cells():
            if c.id == cell_id:
                return c
        raise AssertionError(f"no cell {cell_id}; cells: {[c.id for c in self.cells()]}")

    def index_of(self, cell_id: str) -> int:
        return [c.id for c in self.cells()].index(cell_id)

    def cell_node(self, cell_id: str):
        return self.page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(
            self.index_of(cell_id)
        )

    def plugin_active(self, plugin_id: str) -> bool:
        return self.js("return window.jupyterapp.isPluginActivated(arg);", plugin_id)

    def kernel_idle(self) -> bool:
        return self.js(
            _PANEL + "return ok && !!panel.sessionContext.session?.kernel"
            " && panel.sessionContext.session.kernel.status === 'idle';"
        )

    def screenshot(self, label: str, show: str | None = None) -> None:
        """Save test-artifacts/ui/<notebook>-<n>-<label>.png, scrolled to cell ``show``."""
        if show is not None:
            self.cell_node(show).scroll_into_view_if_needed()
        self.shots += 1
        stem = Path(self.name).stem + ("" if self.app == "lab" else "-nb7")
        self.page.screenshot(path=str(ARTIFACTS / f"{stem}-{self.shots:02d}-{label}.png"))

    # -- actions -----------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the notebook (JupyterLab: in a reset workspace, so nothing else is restored);
        wait until it is the current widget, loaded, with an idle kernel."""
        if self.app == "lab":
            self.page.goto(f"{self.base_url}/lab/tree/{self.name}?reset")
        else:
            self.page.goto(f"{self.base_url}/notebooks/{self.name}")
        self.wait_js(
            _PANEL
            + """return ok && panel.context.path === arg && panel.context.isReady
              && panel.content.widgets.length > 0
              && panel.sessionContext.session?.kernel?.status === 'idle';""",
            self.name,
            90_000,
        )

    def wait_connected(self, timeout_ms: float = 30_000) -> None:
        """Until the extension and the kernel completed the keras2torch handshake."""
        self.wait_js(
            _PANEL + "return ok && panel.node.dataset.keras2torch === 'connected';", None, timeout_ms
        )

    def save(self) -> None:
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        self.wait_js(_PANEL + "return ok && !panel.context.model.dirty;")

    def select(self, cell_id: str) -> None:
        """Make a cell active in command mode, as a click on its prompt does."""
        node = self.cell_node(cell_id)
        node.scroll_into_view_if_needed()
        node.locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")
        self.wait_js(_PANEL + "return ok && panel.content.activeCell?.model.id === arg;", cell_id)

    def run(self, cell_id: str, timeout_ms: int = RUN_TIMEOUT_MS) -> Cell:
        """Ctrl+Enter on the cell (run, stay: no new cell appended); wait until it ran."""
        before = self.cell(cell_id).execution_count
        self.select(cell_id)
        self.page.keyboard.press("Control+Enter")
        self.wait_ran(cell_id, before, timeout_ms)
        return self.cell(cell_id)

    def wait_ran(self, cell_id: str, before: int | None, timeout_ms: int = RUN_TIMEOUT_MS) -> None:
        self.wait_js(
            _PANEL
            + """
            if (!ok) return false;
            const w = panel.content.widgets.find(w => w.model.id === arg.id);
            const kernel = panel.sessionContext.session?.kernel;
            return !!w && w.model.executionState === 'idle'
              && w.model.executionCount !== null && w.model.executionCount !== arg.before
              && !!kernel && kernel.status === 'idle';
            """,
            {"id": cell_id, "before": before},
            timeout_ms,
        )

    def settle(self, seconds: float = 1.0) -> list[Cell]:
        """Cells once nothing has changed for ``seconds`` (late payloads, comm replies)."""
        last = None
        stable_since = time.monotonic()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            snapshot = json.dumps([c.__dict__ for c in self.cells()], sort_keys=True)
            if snapshot != last:
                last, stable_since = snapshot, time.monotonic()
            elif time.monotonic() - stable_since >= seconds:
                break
            time.sleep(0.1)
        return self.cells()

    def wait_cells(self, count: int, timeout: float = 20) -> list[Cell]:
        deadline = time.monotonic() + timeout
        while True:
            cells = self.cells()
            if len(cells) == count or time.monotonic() > deadline:
                return cells
            time.sleep(0.1)

    def type_at_end(self, cell_id: str, text: str) -> None:
        """Click into the cell's editor, go to its very end and type (real key events)."""
        node = self.cell_node(cell_id)
        node.scroll_into_view_if_needed()
        node.locator(".cm-content").click()
        self.page.keyboard.press("Control+End")
        self.page.keyboard.type(text)
        self.page.keyboard.press("Escape")

    def backspace_at_end(self, cell_id: str, count: int) -> None:
        node = self.cell_node(cell_id)
        node.locator(".cm-content").click()
        self.page.keyboard.press("Control+End")
        for _ in range(count):
            self.page.keyboard.press("Backspace")

    def palette(self, label: str) -> None:
        """Run a command from the command palette by its label."""
        self.page.keyboard.press("Control+Shift+C")
        box = self.page.locator(".lm-CommandPalette-input")
        expect(box).to_be_visible()
        box.fill(label)
        item = self.page.locator(".lm-CommandPalette-item", has_text=re.compile(rf"^{re.escape(label)}"))
        expect(item.first).to_be_visible()
        self.page.keyboard.press("Enter")

    def output_text(self, cell_id: str) -> str:
        return self.cell_node(cell_id).locator(".jp-OutputArea").inner_text()
