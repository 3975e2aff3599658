"""The notebook experience in a real JupyterLab, in headless Chromium.

With the extension: the generated cell appears once below its source cell, runs, is updated in
place (not duplicated) on re-runs, survives the user's edits, is visibly marked; the comparison
widget shows; the palette command converts a plain Keras cell (loading the IPython extension
itself). Without it (disabled): IPython's ``set_next_input`` fallback inserts the cell once.
"""

from __future__ import annotations

import re

import pytest
from nbdriver import PLUGIN_ID, NotebookDriver
from playwright.sync_api import expect

pytestmark = [pytest.mark.ui, pytest.mark.timeout(420)]

LOAD = "%load_ext kerastorch_magic"
MODEL_CELL = """%%keras2torch
import keras

def make(units):
    return keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="hidden"),
         keras.layers.Dense(units, name="head")],
        name="tiny",
    )

model = make(2)"""
PLAIN_CELL = MODEL_CELL.split("\n", 1)[1]  # the same cell without the magic

CLASS_RE = re.compile(r"^class Net\(nn\.Module\):", re.M)


def generated_for(cells, source_id):
    return [c for c in cells if c.generated and f"from cell {source_id}," in c.source.split("\n")[0]]


def test_generated_cell_lifecycle(lab, page):
    lab.write_notebook("lifecycle.ipynb", [LOAD, MODEL_CELL])
    nb = NotebookDriver(page, lab.url, "lifecycle.ipynb")
    nb.open()
    assert nb.plugin_active(PLUGIN_ID)
    load_id, src_id = [c.id for c in nb.cells()]
    # A second tab on the same notebook and kernel: it must not write anything.
    other_context = page.context.browser.new_context(viewport={"width": 1000, "height": 700})
    other = NotebookDriver(other_context.new_page(), lab.url, "lifecycle.ipynb")
    other.open()

    # %load_ext, then the magic: exactly one new cell, right below the source cell.
    assert nb.run(load_id).errors == []
    nb.wait_connected()
    other.wait_connected()  # both tabs answered the kernel's hello
    src = nb.run(src_id)
    assert src.errors == [], src.errors
    cells = nb.wait_cells(3)
    assert [c.id for c in cells[:2]] == [load_id, src_id]
    gen = cells[2]
    assert gen.generated and CLASS_RE.search(gen.source), gen.source
    assert gen.k2t is not None and gen.k2t["source_cell_id"] == src_id
    assert gen.execution_count is None  # written, never run by the extension
    assert "Dense" in gen.source or "nn.Linear" in gen.source
    # Visibly marked, with a tooltip naming the source cell.
    node = nb.cell_node(gen.id)
    expect(node).to_have_class(re.compile(r"\bk2t-generated\b"))
    badge = node.locator(".k2t-generated-badge")
    expect(badge).to_be_visible()
    assert src_id in (badge.get_attribute("title") or "")
    assert "cell #2" in (badge.get_attribute("title") or "")
    # The comparison widget of the source cell's output.
    widget = nb.cell_node(src_id).locator(".k2t-widget")
    expect(widget.first).to_be_visible(timeout=30_000)
    nb.screenshot("generated", show=gen.id)
    assert len(other.settle(0.5)) == 2  # the other client received the upsert and ignored it
    other_context.close()

    # The generated cell runs cleanly.
    ran = nb.run(gen.id)
    assert ran.errors == [], ran.errors

    # Re-running the magic with the same model: nothing added, the cell left as is.
    nb.run(src_id)
    cells = nb.settle()
    assert len(cells) == 3, [c.source[:60] for c in cells]
    assert cells[2].id == gen.id and cells[2].source == gen.source

    # The user edits the generated cell (real typing), then changes the model and re-runs.
    nb.type_at_end(gen.id, "\n# my own tweak")
    edited_text = nb.cell(gen.id).source
    assert edited_text.endswith("# my own tweak")
    expect(nb.cell_node(gen.id)).to_have_class(re.compile(r"\bk2t-generated-edited\b"))
    nb.backspace_at_end(src_id, 2)  # "make(2)" -> "make("
    nb.page.keyboard.type("3)")
    nb.page.keyboard.press("Escape")
    assert nb.cell(src_id).source.endswith("model = make(3)")
    assert nb.run(src_id).errors == []
    cells = nb.wait_cells(4)
    assert len(cells) == 4, [c.source[:60] for c in cells]
    assert cells[2].id == gen.id and cells[2].source == edited_text  # kept untouched
    fresh = cells[3]
    assert fresh.generated and fresh.k2t and fresh.k2t["source_cell_id"] == src_id
    assert CLASS_RE.search(fresh.source)
    assert fresh.source != gen.source  # the new model (3 outputs)
    expect(nb.page.get_by_text("the new PyTorch code is in a fresh cell below")).to_be_visible()
    nb.screenshot("kept-edited", show=fresh.id)

    # And the next run updates the fresh cell in place.
    nb.backspace_at_end(src_id, 2)
    nb.page.keyboard.type("4)")
    nb.page.keyboard.press("Escape")
    nb.run(src_id)
    cells = nb.settle()
    assert [c.id for c in cells] == [load_id, src_id, gen.id, fresh.id]
    assert cells[2].source == edited_text
    assert cells[3].source != fresh.source and CLASS_RE.search(cells[3].source)
    assert page.k2t_console is not None
    assert not [m for m in page.k2t_console if m.startswith("pageerror")], page.k2t_console


def test_palette_command_converts_a_plain_keras_cell(lab, page):
    # No %load_ext anywhere: the command loads the IPython extension itself.
    lab.write_notebook("palette.ipynb", [PLAIN_CELL])
    nb = NotebookDriver(page, lab.url, "palette.ipynb")
    nb.open()
    (src_id,) = [c.id for c in nb.cells()]
    nb.select(src_id)

    # Offered in the cell's context menu and cell toolbar too.
    nb.cell_node(src_id).locator(".jp-InputPrompt").click(button="right")
    item = page.locator('.lm-Menu-item[data-command="keras2torch:convert"]')
    expect(item).to_be_visible()
    page.keyboard.press("Escape")
    expect(
        nb.cell_node(src_id).locator('.jp-cell-toolbar [data-command="keras2torch:convert"]')
    ).to_have_count(1)

    nb.select(src_id)
    nb.palette("Convert Keras model to PyTorch")
    nb.wait_ran(src_id, None)
    cells = nb.wait_cells(2)
    assert cells[0].source.startswith("%%keras2torch\n")
    assert cells[0].errors == [], cells[0].errors
    assert len(cells) == 2 and cells[1].generated and CLASS_RE.search(cells[1].source)
    assert cells[1].k2t and cells[1].k2t["source_cell_id"] == src_id
    # The silent %load_ext left no trace in the notebook.
    assert "load_ext" not in nb.output_text(src_id)
    nb.screenshot("converted", show=cells[1].id)
    gen = cells[1]

    # Same extension in Notebook 7, as a client that connects to the kernel afterwards: it is
    # greeted at once, so its first run updates the generated cell in place (no fallback cell).
    nb.save()
    nb7 = NotebookDriver(page, lab.url, "palette.ipynb", app="notebook")
    nb7.open()
    assert nb7.plugin_active(PLUGIN_ID)
    nb7.wait_connected()
    assert [c.id for c in nb7.cells()] == [src_id, gen.id]
    nb7.backspace_at_end(src_id, 2)  # make(2) -> make(5)
    page.keyboard.type("5)")
    page.keyboard.press("Escape")
    assert nb7.run(src_id).errors == []
    cells = nb7.settle()
    assert [c.id for c in cells] == [src_id, gen.id], [c.source[:60] for c in cells]
    assert cells[1].source != gen.source and "nn.Linear(16, 5)" in cells[1].source
    expect(nb7.cell_node(gen.id)).to_have_class(re.compile(r"\bk2t-generated\b"))
    nb7.screenshot("updated", show=gen.id)


def test_fallback_without_extension_inserts_once(lab_without_extension, page):
    server = lab_without_extension
    server.write_notebook("fallback.ipynb", [LOAD, MODEL_CELL])
    nb = NotebookDriver(page, server.url, "fallback.ipynb")
    nb.open()
    assert not nb.plugin_active(PLUGIN_ID)
    load_id, src_id = [c.id for c in nb.cells()]
    nb.run(load_id)
    assert nb.run(src_id).errors == []
    cells = nb.wait_cells(3)
    assert len(cells) == 3, [c.source[:60] for c in cells]
    gen = cells[2]
    assert generated_for(cells, src_id) == [gen]
    assert CLASS_RE.search(gen.source)
    assert gen.k2t is None  # set_next_input writes no metadata
    assert "k2t-generated" not in gen.classes  # no extension, no marking
    nb.screenshot("fallback-inserted", show=gen.id)

    # Re-running with the same model does not insert it again.
    nb.run(src_id)
    cells = nb.settle()
    assert len(cells) == 3, [c.source[:60] for c in cells]
    assert "unchanged" in nb.output_text(src_id)
    nb.screenshot("fallback-rerun", show=gen.id)
