"""The comparison widget in a real JupyterLab (headless system Chromium).

A notebook displays a comparison with a known mistake: the table renders one row per Keras layer,
the first failure is selected, clicking a row draws the Keras / PyTorch / |Δ| activation maps (or
the overlaid plots of a vector layer), the tolerance control re-colours the statuses. A second
notebook checks that a 1,200-layer comparison stays fast (only the visible rows are in the DOM).
Screenshots: ``test-artifacts/ui/widget.png`` (and ``widget-vector.png``, ``widget-large.png``).
"""

from __future__ import annotations

import re
import time

import pytest
from nbdriver import ARTIFACTS, NotebookDriver
from playwright.sync_api import expect

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]

SETUP = """\
import keras, numpy as np
import kerastorch_magic as k2t

keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ],
    name="workshop_cnn",
)
rng = np.random.default_rng(0)
bn = model.layers[1]
bn.set_weights([w if i < 2 else rng.uniform(0.2, 1.0, w.shape).astype("float32") * (i - 1)
                for i, w in enumerate(bn.get_weights())])
conversion = k2t.convert(model)
# The hand-port mistake of the guide: BatchNorm left at torch's eps.
conversion.state_dict["batch_normalization.running_var"] += 1e-3 - 1e-5
comparison = k2t.compare(model, conversion)
print(len(comparison.layers), "rows")"""
SHOW = "comparison"

LARGE = """\
import sys
import keras
import kerastorch_magic as k2t

sys.setrecursionlimit(20000)  # Keras itself recurses once per layer when it builds a deep Sequential

deep = keras.Sequential(
    [keras.Input((16,))] + [keras.layers.Dense(16, activation="tanh") for _ in range(1200)],
    name="deep",
)
deep_comparison = k2t.compare(deep, k2t.convert(deep))
deep_comparison"""

# Counts the distinct colours in a canvas: a drawn activation map has many, a blank one has one.
CANVAS_COLOURS = """(canvas) => {
  const context = canvas.getContext('2d');
  const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
  const seen = new Set();
  for (let i = 0; i < data.length; i += 4 * 7) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
  return seen.size;
}"""


class WidgetNotebook(NotebookDriver):
    """Opens its notebook in a workspace of its own: tabs left by other tests do not interfere."""

    def open(self) -> None:
        stem = self.name.rsplit(".", 1)[0]
        self.page.goto(f"{self.base_url}/lab/workspaces/{stem}/tree/{self.name}")
        self.page.wait_for_function(
            "(name) => { const app = window.jupyterapp; const p = app && app.shell.currentWidget;"
            " return !!(p && p.context && p.context.isReady && p.context.path === name"
            " && p.content.widgets.length && p.sessionContext.session?.kernel?.status === 'idle'); }",
            arg=self.name,
            timeout=90_000,
        )


def _widget(nb, cell_id):
    widget = nb.cell_node(cell_id).locator(".k2t-widget")
    expect(widget).to_be_visible(timeout=60_000)
    return widget


def test_comparison_widget_in_jupyterlab(lab_without_extension, page):
    lab = lab_without_extension
    page.set_viewport_size({"width": 1400, "height": 1700})  # the whole widget in the screenshots
    lab.write_notebook("compare_widget.ipynb", [SETUP, SHOW])
    nb = WidgetNotebook(page, lab.url, "compare_widget.ipynb")
    nb.open()
    setup_id, show_id = (cell.id for cell in nb.cells())
    ran = nb.run(setup_id)
    assert ran.errors == [], ran.errors
    assert "7 rows" in nb.output_text(setup_id)
    nb.run(show_id)
    widget = _widget(nb, show_id)

    # One row per Keras layer, the first failure selected and drawn.
    rows = widget.locator("tr.k2t-row")
    expect(rows).to_have_count(7)
    assert widget.get_attribute("data-rows") == "7"
    assert [rows.nth(i).get_attribute("data-index") for i in range(7)] == [str(i) for i in range(7)]
    assert rows.nth(0).get_attribute("data-status") == "ok"
    assert rows.nth(1).get_attribute("data-status") == "fail"
    expect(widget.locator(".k2t-verdict")).to_contain_text("first: batch_normalization")
    expect(widget.locator(".k2t-meta")).to_contain_text("PyTorch")
    expect(widget.locator(".k2t-meta")).to_contain_text("tensorflow")
    selected = re.compile(r"\bk2t-selected\b")
    expect(rows.nth(1)).to_have_class(selected)

    # Clicking a convolution row shows Keras, PyTorch and |Δ| maps per channel, and a histogram.
    rows.nth(3).click()
    expect(rows.nth(3)).to_have_class(selected)
    detail = widget.locator(".k2t-detail")
    expect(detail).to_contain_text("conv2d_1")
    maps = detail.locator("canvas.k2t-map-canvas")
    expect(maps).to_have_count(4 * 3)
    for i in range(3):  # Keras, PyTorch and |Δ| of the first channel are real pictures
        assert maps.nth(i).evaluate(CANVAS_COLOURS) > 8
    assert detail.locator("canvas.k2t-hist").evaluate(CANVAS_COLOURS) > 2
    widget.scroll_into_view_if_needed()
    widget.screenshot(path=str(ARTIFACTS / "widget.png"))

    # A vector layer: overlaid plots instead of maps.
    rows.nth(5).click()
    expect(detail).to_contain_text("dense")
    plots = detail.locator("canvas.k2t-plot")
    expect(plots).to_have_count(2)
    assert plots.first.evaluate(CANVAS_COLOURS) > 3
    widget.screenshot(path=str(ARTIFACTS / "widget-vector.png"))

    # The tolerance control re-colours statuses in the browser (no kernel round trip needed).
    tolerance = widget.locator("input.k2t-tol-text")
    tolerance.fill("0.5")
    tolerance.press("Enter")
    expect(widget.locator(".k2t-verdict")).to_contain_text("All 7 compared layer outputs match")
    assert rows.nth(1).get_attribute("data-status") in ("ok", "warn")
    # "Issues" filter after tightening again.
    tolerance.fill("1e-4")
    tolerance.press("Enter")
    issues = sum(rows.nth(i).get_attribute("data-status") in ("fail", "warn") for i in range(7))
    assert issues >= 5
    widget.locator("button.k2t-seg-button", has_text="Issues").click()
    expect(widget.locator("tr.k2t-row")).to_have_count(issues)
    assert page.k2t_console == [] or not any("pageerror" in line for line in page.k2t_console)


def test_large_comparison_stays_fast(lab_without_extension, page):
    lab = lab_without_extension
    lab.write_notebook("compare_large.ipynb", [LARGE])
    nb = WidgetNotebook(page, lab.url, "compare_large.ipynb")
    nb.open()
    (cell_id,) = (cell.id for cell in nb.cells())
    ran = nb.run(cell_id, timeout_ms=400_000)
    assert ran.errors == [], ran.errors
    widget = _widget(nb, cell_id)
    assert widget.get_attribute("data-rows") == "1200"
    rendered = widget.locator("tr.k2t-row").count()
    assert 10 < rendered < 120  # virtualised: only what is on screen (plus a margin)
    wrap = widget.locator(".k2t-table-wrap")
    started = time.perf_counter()
    for position in range(0, 1200 * 26, 26 * 300):
        wrap.evaluate(f"(el) => {{ el.scrollTop = {position}; }}")
        page.wait_for_timeout(30)
    wrap.evaluate("(el) => { el.scrollTop = el.scrollHeight; }")
    last = widget.locator("tr.k2t-row[data-index='1199']")
    expect(last).to_be_visible()
    assert time.perf_counter() - started < 5
    last.click()
    expect(widget.locator(".k2t-detail")).to_contain_text("dense_1199")
    expect(widget.locator(".k2t-detail canvas.k2t-plot").first).to_be_visible()
    widget.screenshot(path=str(ARTIFACTS / "widget-large.png"))
