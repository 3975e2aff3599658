"""The comparison widget without a kernel: traits, binary previews, the static HTML fallback."""

import base64
import html
import json
import re
import struct
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from exactness import randomise_weights

import kerastorch_magic as k2t
from kerastorch_magic import widget as widget_module
from kerastorch_magic.widget import ComparisonWidget
from kerastorch_magic.widget.html import colormap, png

STATIC = Path(widget_module.__file__).parent / "static"


def build_model():
    return keras.Sequential(
        [
            keras.Input((20, 20, 3)),
            keras.layers.Conv2D(6, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )


@pytest.fixture
def comparison():
    model = build_model()
    randomise_weights(model)
    conversion = k2t.convert(model)
    conversion.state_dict["batch_normalization.running_var"] *= 1.05  # fails from layer 1 on
    return k2t.compare(model, conversion, device="cpu")


def _check_entry(widget, index):
    entry = widget.detail_meta["rows"][str(index)]
    data = widget.detail
    if entry["kind"] == "image":
        channels, height, width = entry["shape"]
        size = channels * height * width
        for key in ("keras", "torch", "diff"):
            assert entry[key] % 4 == 0 and entry[key] + size <= len(data)
        keras_map = np.frombuffer(data, np.uint8, size, entry["keras"]).reshape(channels, height, width)
        assert keras_map.max() > keras_map.min()  # a real picture, not a blank
        assert len(entry["low"]) == len(entry["high"]) == len(entry["diff_high"]) == channels
    else:
        channels, length = entry["shape"]
        for key in ("keras", "torch"):
            values = np.frombuffer(data, np.float32, channels * length, entry[key])
            assert np.isfinite(values).all()
    hist = entry["hist"]
    assert len(hist["keras"]) == len(hist["torch"]) > 0 and hist["low"] < hist["high"]
    return entry


def test_widget_state(comparison):
    widget = ComparisonWidget(comparison)
    assert len(widget.rows) == len(comparison.layers) == 6
    row = widget.rows[1]
    assert row["layer"] == "batch_normalization" and row["cls"] == "BatchNormalization"
    assert row["kshape"] == [2, 18, 18, 6] and row["tshape"] == [2, 6, 18, 18]
    assert row["rel"] > 1e-4 and row["cmp"] is True and row["kp"] == row["tp"] == 24
    assert widget.rows[-1]["out"] is True
    assert widget.tolerance == comparison.tolerance == 1e-4
    assert widget.selected == 1  # the first failure is shown first
    header = widget.header
    assert header["model"] == "sequential" and header["torch_device"] == "cpu"
    assert keras.backend.backend() in header["keras_device"]
    assert "random normal" in header["input"]
    assert header["counts"]["fail"] == 5 and header["counts"]["ok"] == 1
    assert "class Net(nn.Module)" in widget.code
    assert widget.detail_meta["complete"] is True  # small: every row's previews shipped at once
    kinds = {_check_entry(widget, i)["kind"] for i in range(len(widget.rows))}
    assert kinds == {"image", "lines"}


def test_widget_loads_previews_on_selection_when_large(comparison, monkeypatch):
    monkeypatch.setattr(widget_module, "PRELOAD_BYTES", 0)
    widget = ComparisonWidget(comparison)
    assert widget.detail_meta["complete"] is False
    assert list(widget.detail_meta["rows"]) == ["1"]
    size = len(widget.detail)
    widget.selected = 5  # what the front end does on a click; the kernel answers
    assert list(widget.detail_meta["rows"]) == ["5"]
    assert _check_entry(widget, 5)["kind"] == "lines"
    assert len(widget.detail) != size


def test_rows_are_json_safe_for_nan_and_skips():
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="a"), keras.layers.Dense(2, name="b")]
    )
    import torch
    from torch import nn

    class Port(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Linear(3, 2)
            self.a = nn.Linear(4, 3)

        def forward(self, x):
            return self.b(self.a(x) * float("nan"))

    result = k2t.compare(model, Port(), mapping={"a": "a"}, device="cpu")
    widget = ComparisonWidget(result)
    json.dumps(widget.rows, allow_nan=False)  # the front end gets plain JSON
    statuses = [layer.status(1e-4) for layer in result.layers]
    assert statuses[1] == "fail" and widget.rows[1]["rel"] is None and widget.rows[1]["cmp"]
    assert torch.isnan(torch.tensor(result.layers[1].max_abs_diff))


def test_static_html_fallback(comparison):
    text = comparison.to_html()
    assert text.isascii()
    assert text.count('<tr class="k2t-s-row-') == len(comparison.layers)
    assert text.count('<tr class="k2t-s-row-fail"') == 5
    assert "batch_normalization" in text and "BatchNormalization" in text
    thumbnails = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(thumbnails) == 2 * 3  # Keras and |Δ| for the three image-shaped layers
    for encoded in thumbnails:
        assert base64.b64decode(encoded).startswith(b"\x89PNG\r\n\x1a\n")
    assert text.count("<svg") == 2 * 3  # vectors as inline sparklines
    assert "PyTorch on cpu" in text


def test_mimebundle_has_widget_view_and_static_table(comparison):
    bundle = comparison._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == comparison.widget().model_id
    assert '<table class="k2t-s-table">' in bundle["text/html"]
    assert "differ beyond" in bundle["text/plain"]
    assert comparison.widget() is comparison.widget()  # one widget per comparison


def test_layer_names_are_escaped():
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(2, name='<img src=x onerror="alert(1)">')(inputs)
    model = keras.Model(inputs, outputs)
    result = k2t.compare(model, k2t.convert(model), device="cpu")
    text = result.to_html()
    assert "<img src=x" not in text and "&lt;img src=x" in text
    assert result.widget().rows[0]["layer"].startswith("<img")  # raw in JSON; the view sets textContent


def test_static_files_ship_in_the_package(comparison):
    js = (STATIC / "widget.js").read_text()
    css = (STATIC / "widget.css").read_text()
    for name in ("k2t-widget", "k2t-row", "k2t-detail"):
        assert name in js and name in css
    assert "export default { render }" in js
    assert not re.search(r"^\s*import\b", js, re.MULTILINE)  # no imports at all: no CDN, no build step
    widget = ComparisonWidget(comparison)
    assert "k2t-widget" in widget._esm and "k2t-widget" in widget._css


def test_png_encoder():
    rgb = colormap(np.linspace(0, 1, 12).reshape(3, 4))
    data = png(rgb)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (4, 3)
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    raw = zlib.decompress(data[idat + 4 : idat + 4 + length])
    assert len(raw) == 3 * (1 + 4 * 3)
    assert tuple(rgb[0, 0]) != tuple(rgb[-1, -1])


# -- the exported static table in a real browser ------------------------------------------------
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "export"
CHROMIUM = Path("/usr/bin/chromium")

# Per table cell: its text must lie inside the cell, unless an ellipsis box (.k2t-s-clip) inside
# the cell clips it, and then that box lies inside the cell and carries the full text as a tooltip.
OVERFLOWS = """() => {
  const problems = [];
  const inside = (inner, outer) =>
    inner.left >= outer.left - 0.5 && inner.right <= outer.right + 0.5 &&
    inner.top >= outer.top - 0.5 && inner.bottom <= outer.bottom + 0.5;
  const cells = document.querySelectorAll('table.k2t-s-table th, table.k2t-s-table td');
  for (const cell of cells) {
    const box = cell.getBoundingClientRect();
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!node.textContent.trim()) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      const text = range.getBoundingClientRect();
      if (!text.width && !text.height) continue;  // not rendered (an SVG <title>)
      const clip = node.parentElement.closest('.k2t-s-clip');
      if (clip && cell.contains(clip)) {
        const clipBox = clip.getBoundingClientRect();
        if (!inside(clipBox, box)) problems.push(`clip box out of its cell: ${clip.title}`);
        if (text.right > clipBox.right + 0.5 && !clip.title.includes(node.textContent.trim()))
          problems.push(`clipped without its full text in the tooltip: ${node.textContent}`);
        if (getComputedStyle(clip).textOverflow !== 'ellipsis') problems.push('clip without ellipsis');
      } else if (!inside(text, box)) {
        problems.push(`"${node.textContent}" overflows its ${cell.tagName} (${text.left.toFixed(1)}-` +
          `${text.right.toFixed(1)} in ${box.left.toFixed(1)}-${box.right.toFixed(1)})`);
      }
    }
  }
  const clipped = [...document.querySelectorAll('.k2t-s-clip')].filter((e) => e.scrollWidth > e.clientWidth);
  return { problems, cells: cells.length, clipped: clipped.map((e) => e.title) };
}"""


def _exported_notebook_html(comparison) -> str:
    """The comparison as ``jupyter nbconvert --to html`` exports it (JupyterLab's stylesheet included)."""
    import nbformat
    from nbconvert import HTMLExporter

    bundle = comparison._repr_mimebundle_()
    output = nbformat.v4.new_output(
        "display_data", data={key: bundle[key] for key in ("text/plain", "text/html")}
    )
    cell = nbformat.v4.new_code_cell("k2t.compare(model, conversion)", outputs=[output], execution_count=1)
    notebook = nbformat.v4.new_notebook(cells=[cell])
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    return body


def _long_names_comparison():
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(4, 3, name="stem_convolution_with_a_very_long_descriptive_name")(inputs)
    x = keras.layers.BatchNormalization(name="block6a_expand_batch_normalization_of_the_stem")(x)
    x = keras.layers.MaxPooling2D(name="max_pooling2d")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inputs, outputs, name="long_names")
    randomise_weights(model)
    conversion = k2t.convert(model)
    conversion.state_dict[next(k for k in conversion.state_dict if "running_var" in k)] *= 1.05
    return k2t.compare(model, conversion, device="cpu", progress=False)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the system Chromium")
def test_exported_static_table_has_no_overlapping_cells(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    comparison = _long_names_comparison()
    page_file = tmp_path / "export.html"
    page_file.write_text(_exported_notebook_html(comparison), encoding="utf-8")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.route("http*://**", lambda route: route.abort())  # the export's CDN scripts: offline
            for width in (1300, 800):
                page.set_viewport_size({"width": width, "height": 700})
                page.goto(page_file.as_uri(), wait_until="domcontentloaded")
                table = page.locator("table.k2t-s-table")
                table.wait_for()
                found = page.evaluate(OVERFLOWS)
                page.locator(".k2t-static").screenshot(path=str(ARTIFACTS / f"static-table-{width}.png"))
                assert found["cells"] == 12 * (1 + len(comparison.layers))
                assert found["problems"] == [], (width, found["problems"])
                # JupyterLab's ``table-layout: fixed`` is overridden: columns fit their content.
                assert (
                    page.evaluate("getComputedStyle(document.querySelector('table.k2t-s-table')).tableLayout")
                    == "auto"
                )
                headers = page.locator("table.k2t-s-table th")
                for i in range(headers.count()):  # no header cut ("PyTorch modu")
                    assert headers.nth(i).evaluate("(e) => e.scrollWidth <= e.clientWidth"), headers.nth(
                        i
                    ).inner_text()
                # The long names are ellipsised, their full text in the tooltip.
                clipped = " ".join(found["clipped"])
                assert "stem_convolution_with_a_very_long_descriptive_name" in clipped
                assert "converter: converters.conv.convert_conv" in clipped
        finally:
            browser.close()


FAKE_MODEL = """async ([source, css, state, detail]) => {
  const style = document.createElement('style');
  style.textContent = css;
  document.head.appendChild(style);
  const bytes = Uint8Array.from(atob(detail), (c) => c.charCodeAt(0));
  const values = { ...state, detail: new DataView(bytes.buffer) };
  const model = {
    get: (name) => values[name],
    set: (name, value) => { values[name] = value; },
    on: () => {}, off: () => {}, save_changes: () => {},
  };
  const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
  const widget = (await import(url)).default;
  const el = document.createElement('div');
  document.body.appendChild(el);
  widget.render({ model, el });
}"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the system Chromium")
def test_live_widget_shows_drift_and_the_converter():
    """The widget's own script in Chromium (a stand-in model object instead of a kernel)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from test_drift import chaotic_chain

    model = chaotic_chain()
    comparison = k2t.compare(model, k2t.convert(model), device="cpu", progress=False)
    statuses = comparison.statuses()
    assert "drift" in statuses
    widget = ComparisonWidget(comparison)
    state = {
        name: getattr(widget, name)
        for name in ("header", "rows", "tolerance", "warn_fraction", "selected", "detail_meta", "code")
    }
    detail = base64.b64encode(widget.detail).decode("ascii")
    source, css = (STATIC / "widget.js").read_text(), (STATIC / "widget.css").read_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1200})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.evaluate(FAKE_MODEL, [source, css, state, detail])
            rows = page.locator("tr.k2t-row")
            rows.first.wait_for()
            assert errors == []
            for i in range(rows.count()):  # the browser's statuses are Python's, drift included
                row = rows.nth(i)
                assert row.get_attribute("data-status") == statuses[int(row.get_attribute("data-index"))]
            verdict = page.locator(".k2t-verdict")
            assert "k2t-verdict-drift" in verdict.get_attribute("class")
            assert "float32 round-off" in verdict.inner_text()
            colour = "(e) => getComputedStyle(e).backgroundColor"
            drift_badge = page.locator("tr.k2t-row[data-status=drift] .k2t-badge").first.evaluate(colour)
            ok_badge = page.locator("tr.k2t-row[data-status=ok] .k2t-badge").first.evaluate(colour)
            assert drift_badge not in (ok_badge, "rgba(0, 0, 0, 0)")
            assert (
                page.locator(".k2t-counts .k2t-badge-drift").inner_text()
                == f"{statuses.count('drift')} drift"
            )
            layer_cell = rows.first.locator("td.k2t-c-layer")
            assert layer_cell.get_attribute("title").endswith("converter: converters.core.convert_dense")
            headers = page.locator(".k2t-table th")
            cut = headers.evaluate_all(
                "(all) => all.filter((e) => e.scrollWidth > e.clientWidth)"
                ".map((e) => `${e.textContent}: ${e.scrollWidth} > ${e.clientWidth}`)"
            )
            assert cut == []  # every header readable in full at this width
            page.locator(".k2t-widget").screenshot(path=str(ARTIFACTS / "widget-drift.png"))
            # Tightening the tolerance in the browser: more layers drift, none fails.
            tolerance = page.locator("input.k2t-tol-text")
            tolerance.fill("1e-5")
            tolerance.press("Enter")
            shown = [rows.nth(i).get_attribute("data-status") for i in range(rows.count())]
            assert "fail" not in shown and shown.count("drift") >= statuses.count("drift")
        finally:
            browser.close()


def _recurrent_and_random_comparisons():
    from test_compare import recurrent_model, vae_decoder_model

    comparisons = []
    for model in (recurrent_model(), vae_decoder_model()):
        randomise_weights(model)
        comparisons.append(k2t.compare(model, k2t.convert(model), device="cpu", progress=False))
    return comparisons


def test_sequences_states_and_random_layers_in_the_widget_and_static_table():
    recurrent, vae = _recurrent_and_random_comparisons()
    widget = ComparisonWidget(recurrent)
    assert [row["outl"] for row in widget.rows[:3]] == ["sequence", "state h", "state c"]
    assert widget.rows[4]["outl"] == "forward state h" and widget.rows[-1]["outl"] == ""
    sequence = _check_entry(widget, 3)  # Bidirectional's (2, 7, 8) sequence: a features x time map
    assert sequence["kind"] == "image" and sequence["shape"] == [1, 8, 7] and sequence["channels"] == []
    assert "8 features over 7 steps" in sequence["label"]
    assert _check_entry(widget, 1)["kind"] == "lines"  # a state
    text = html.unescape(recurrent.to_html())  # (exported as ASCII: character references)
    assert "lstm · state h" in text and "bi · backward state c" in text
    assert text.count('<tr class="k2t-s-row-ok"') == len(recurrent.layers)
    # The three sequences (LSTM's, Bidirectional's, the head's) as (features x time) thumbnails,
    # the six states as sparklines.
    assert len(re.findall(r'alt="Keras, features × time"', text)) == 3
    assert text.count("<svg") == 2 * 6

    widget = ComparisonWidget(vae)
    random = [row for row in widget.rows if row["rnd"]]
    assert [row["layer"] for row in random] == ["sampling"] and not widget.rows[-1]["rnd"]
    assert widget.header["counts"]["random"] == 1 and widget.header["counts"]["fail"] == 0
    text = html.unescape(vae.to_html())
    assert text.count('<tr class="k2t-s-row-random"') == 1 and "k2t-b-random" in text
    assert "✔ all 5 compared layer outputs match" in text and "random at inference: 'sampling'" in text


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs the system Chromium")
def test_live_widget_shows_random_rows_and_sequence_maps():
    sync_api = pytest.importorskip("playwright.sync_api")
    recurrent, vae = _recurrent_and_random_comparisons()
    source, css = (STATIC / "widget.js").read_text(), (STATIC / "widget.css").read_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for name, comparison, selected in (("random", vae, 3), ("sequence", recurrent, 3)):
                widget = ComparisonWidget(comparison)
                widget.selected = selected
                state = {
                    key: getattr(widget, key)
                    for key in (
                        "header",
                        "rows",
                        "tolerance",
                        "warn_fraction",
                        "selected",
                        "detail_meta",
                        "code",
                    )
                }
                detail = base64.b64encode(widget.detail).decode("ascii")
                page = browser.new_page(viewport={"width": 1300, "height": 1200})
                errors: list[str] = []
                page.on("pageerror", lambda error, errors=errors: errors.append(str(error)))
                page.evaluate(FAKE_MODEL, [source, css, state, detail])
                rows = page.locator("tr.k2t-row")
                rows.first.wait_for()
                assert errors == []
                statuses = comparison.statuses()
                for i in range(rows.count()):  # the browser's statuses are Python's
                    row = rows.nth(i)
                    assert row.get_attribute("data-status") == statuses[int(row.get_attribute("data-index"))]
                if name == "random":
                    assert "k2t-verdict-ok" in page.locator(".k2t-verdict").get_attribute("class")
                    assert "1 random at inference" in page.locator(".k2t-verdict").inner_text()
                    badge = page.locator(".k2t-counts .k2t-badge-random")
                    assert badge.inner_text() == "1 random"
                else:
                    assert "bi · sequence" in page.locator(".k2t-detail-name").inner_text()
                    maps = page.locator(".k2t-detail canvas.k2t-map-canvas")
                    assert maps.count() == 3  # Keras, PyTorch, |Δ| of the one (features x time) map
                    width, height = maps.first.evaluate("(e) => [e.clientWidth, e.clientHeight]")
                    assert width < height * 1.5  # 8 features down, 7 steps across
                page.locator(".k2t-widget").screenshot(path=str(ARTIFACTS / f"widget-{name}.png"))
                page.close()
        finally:
            browser.close()
