// kerastorch_magic comparison widget (anywidget ESM; plain DOM + canvas, no dependencies).
//
// Model state (see kerastorch_magic/widget/__init__.py): header, rows, tolerance, warn_fraction,
// selected, detail (bytes) + detail_meta, code. DOM hooks the UI tests rely on: the root carries
// `k2t-widget`, each table row `k2t-row` with `data-index`, the activation panel `k2t-detail`.

const ROW_HEIGHT = 26;
const VIRTUAL_ABOVE = 150; // tables with more rows than this render only what is on screen
const OVERSCAN = 12;
const MAP_BOX = 116; // css px: the largest side of one activation map in the detail panel
const KERAS_COLOUR = "#1f6feb";
const TORCH_COLOUR = "#e8590c";
const DIFF_COLOUR = "#cf222e";

// Polynomial fits of matplotlib's viridis and magma (Matt Zucker's, public domain).
const VIRIDIS = [
  [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
  [0.1050930431085774, 1.404613529898575, 1.384590162594685],
  [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
  [-4.634230498983486, -5.799100973351585, -19.33244095627987],
  [6.228269936347081, 14.17993336680509, 56.69055260068105],
  [4.776384997670288, -13.74514537774601, -65.35303263337234],
  [-5.435455855934631, 4.645852612178535, 26.3124352495832],
];
const MAGMA = [
  [-0.002136485053939582, -0.000749655052795221, -0.005386127855323933],
  [0.2516605407371642, 0.6775232436837668, 2.494026599312351],
  [8.353717279216625, -3.577719514958484, 0.3144679030132573],
  [-27.66873308576866, 14.26473078096533, -13.64921318813922],
  [52.17613981234068, -27.94360607168351, 12.94416944238394],
  [-50.76852536473588, 29.04658282127291, 4.23415299384598],
  [18.65570506591883, -11.48977351997711, -5.601961508734096],
];

function lut(coefficients) {
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255;
    for (let c = 0; c < 3; c++) {
      let value = 0;
      for (let k = coefficients.length - 1; k >= 0; k--) value = value * t + coefficients[k][c];
      table[i * 3 + c] = Math.round(Math.min(1, Math.max(0, value)) * 255);
    }
  }
  return table;
}
const VIRIDIS_LUT = lut(VIRIDIS);
const MAGMA_LUT = lut(MAGMA);

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------
function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function bytesOf(value) {
  if (!value) return new Uint8Array(0);
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  if (value.buffer instanceof ArrayBuffer) return new Uint8Array(value.buffer);
  return new Uint8Array(0);
}

function float32At(bytes, offset, count) {
  const copy = bytes.slice(offset, offset + count * 4); // aligned copy
  return new Float32Array(copy.buffer, copy.byteOffset, count);
}

// Per row: it, or a row it reads from, is beyond the tolerance when fed Keras's own inputs (the
// drift check's evidence: row.irel, row.ifail, row.up). Same rule as DriftCheck.tainted in Python.
export function taintOf(rows, tolerance) {
  const tainted = [];
  for (const row of rows) {
    const own = Boolean(row.ifail) || (row.irel !== null && row.irel !== undefined && !(row.irel <= tolerance));
    tainted.push(own || (row.up || []).some((j) => tainted[j]));
  }
  return tainted;
}

// "drift": beyond tolerance end to end, but exact on Keras's inputs all the way up (float32 round-off).
// "random": random at inference (a VAE's sampling): different draws, the values are not compared.
export function statusOf(row, tolerance, warnFraction, tainted = true) {
  if (!row.cmp) return "skip";
  if (row.rnd) return "random";
  if (row.rel === null || row.rel === undefined) return "fail";
  if (!(row.rel <= tolerance)) {
    const checked = Boolean(row.ifail) || (row.irel !== null && row.irel !== undefined);
    return checked && !tainted ? "drift" : "fail";
  }
  if (row.rel > tolerance * warnFraction) return "warn";
  return "ok";
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (!Number.isFinite(value)) return "∞";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude < 1e-2 || magnitude >= 1e4) return value.toExponential(digits);
  return String(Number(value.toPrecision(digits + 2)));
}

function fmtCosine(value) {
  // Near 1, the distance to 1 says more than a row of nines.
  if (value === null || value === undefined) return "—";
  if (value === 1) return "1";
  if (value > 0.9999) return `1 − ${(1 - value).toExponential(0)}`;
  return value.toFixed(5);
}

function fmtInt(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

function fmtShape(shape) {
  if (!shape) return "—";
  if (shape.length === 0) return "scalar";
  return shape.map((d) => (d === null ? "N" : d)).join("×");
}

function fmtSeconds(value) {
  if (value === undefined || value === null) return "?";
  return value < 0.1 ? `${(value * 1000).toFixed(0)} ms` : `${value.toFixed(2)} s`;
}

function parseTolerance(text) {
  const value = Number(String(text).trim());
  return Number.isFinite(value) && value > 0 ? value : null;
}

function setupCanvas(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(width * ratio));
  canvas.height = Math.max(1, Math.round(height * ratio));
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return context;
}

function cssVar(el, name, fallback) {
  const value = getComputedStyle(el).getPropertyValue(name).trim();
  return value || fallback;
}

// ------------------------------------------------------------------------------------------------
// Drawing
// ------------------------------------------------------------------------------------------------
function drawMap(canvas, values, height, width, colour, box) {
  // values: function(index) -> [0, 1]; drawn at `box` css px on the longer side, pixelated; the
  // shorter side at least a quarter of it (a 4-feature, 64-step sequence map stays readable).
  const scale = box / Math.max(height, width);
  const cssW = Math.max(Math.round(box / 4), Math.round(width * scale));
  const cssH = Math.max(Math.round(box / 4), Math.round(height * scale));
  const context = setupCanvas(canvas, cssW, cssH);
  const source = document.createElement("canvas");
  source.width = width;
  source.height = height;
  const sourceContext = source.getContext("2d");
  const image = sourceContext.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const q = Math.max(0, Math.min(255, Math.round(values(i) * 255)));
    image.data[i * 4] = colour[q * 3];
    image.data[i * 4 + 1] = colour[q * 3 + 1];
    image.data[i * 4 + 2] = colour[q * 3 + 2];
    image.data[i * 4 + 3] = 255;
  }
  sourceContext.putImageData(image, 0, 0);
  context.imageSmoothingEnabled = false;
  context.drawImage(source, 0, 0, cssW, cssH);
}

function drawSeries(canvas, keras, torch, width, height, fg, grid) {
  const context = setupCanvas(canvas, width, height);
  const pad = { left: 44, right: 8, top: 8, bottom: 16 };
  const count = keras.length;
  let low = Infinity;
  let high = -Infinity;
  for (const series of [keras, torch]) {
    for (const v of series) {
      if (Number.isFinite(v)) {
        low = Math.min(low, v);
        high = Math.max(high, v);
      }
    }
  }
  if (!Number.isFinite(low)) {
    low = 0;
    high = 1;
  }
  if (count <= 48) {
    // bars start at zero
    low = Math.min(low, 0);
    high = Math.max(high, 0);
  }
  if (high === low) {
    low -= 0.5;
    high += 0.5;
  }
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const y = (v) => pad.top + plotH - ((v - low) / (high - low)) * plotH;
  context.font = "10px system-ui, sans-serif";
  context.fillStyle = fg;
  context.strokeStyle = grid;
  context.lineWidth = 1;
  context.textAlign = "right";
  for (const v of [low, (low + high) / 2, high]) {
    context.beginPath();
    context.moveTo(pad.left, Math.round(y(v)) + 0.5);
    context.lineTo(width - pad.right, Math.round(y(v)) + 0.5);
    context.stroke();
    context.fillText(fmt(v, 1), pad.left - 4, y(v) + 3);
  }
  if (low < 0 && high > 0) {
    context.strokeStyle = fg;
    context.globalAlpha = 0.35;
    context.beginPath();
    context.moveTo(pad.left, Math.round(y(0)) + 0.5);
    context.lineTo(width - pad.right, Math.round(y(0)) + 0.5);
    context.stroke();
    context.globalAlpha = 1;
  }
  if (count <= 48) {
    // grouped bars: Keras and PyTorch side by side
    const slot = plotW / count;
    const bar = Math.max(1, slot * 0.38);
    const zero = y(0);
    for (let i = 0; i < count; i++) {
      const x = pad.left + i * slot + slot * 0.1;
      for (const [series, colour, shift] of [
        [keras, KERAS_COLOUR, 0],
        [torch, TORCH_COLOUR, bar],
      ]) {
        const top = y(series[i]);
        context.fillStyle = colour;
        context.fillRect(x + shift, Math.min(top, zero), bar, Math.max(1, Math.abs(zero - top)));
      }
    }
  } else {
    const x = (i) => pad.left + (count === 1 ? plotW / 2 : (i / (count - 1)) * plotW);
    for (const [series, colour, dash, lineWidth] of [
      [keras, KERAS_COLOUR, [], 2],
      [torch, TORCH_COLOUR, [4, 3], 1.4],
    ]) {
      context.strokeStyle = colour;
      context.lineWidth = lineWidth;
      context.setLineDash(dash);
      context.beginPath();
      for (let i = 0; i < count; i++) {
        if (i === 0) context.moveTo(x(i), y(series[i]));
        else context.lineTo(x(i), y(series[i]));
      }
      context.stroke();
    }
    context.setLineDash([]);
  }
  context.fillStyle = fg;
  context.textAlign = "left";
  context.fillText("0", pad.left, height - 3);
  context.textAlign = "right";
  context.fillText(String(count - 1), width - pad.right, height - 3);
}

function drawDiffBars(canvas, keras, torch, width, height, fg) {
  const context = setupCanvas(canvas, width, height);
  const pad = { left: 44, right: 8, top: 4, bottom: 4 };
  const count = keras.length;
  let high = 0;
  const diff = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    diff[i] = Math.abs(torch[i] - keras[i]);
    if (Number.isFinite(diff[i])) high = Math.max(high, diff[i]);
  }
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  context.fillStyle = DIFF_COLOUR;
  const slot = plotW / count;
  for (let i = 0; i < count; i++) {
    const value = Number.isFinite(diff[i]) ? diff[i] : high;
    const barH = high > 0 ? (value / high) * plotH : 0;
    context.fillRect(pad.left + i * slot, pad.top + plotH - barH, Math.max(1, slot * 0.8), barH);
  }
  context.fillStyle = fg;
  context.font = "10px system-ui, sans-serif";
  context.textAlign = "right";
  context.fillText("|Δ|", pad.left - 4, pad.top + 9);
  context.fillText(fmt(high, 1), pad.left - 4, pad.top + plotH);
}

function drawHistogram(canvas, hist, width, height, fg, grid) {
  const context = setupCanvas(canvas, width, height);
  const pad = { left: 8, right: 8, top: 6, bottom: 16 };
  const bins = hist.keras.length;
  const peak = Math.max(1, ...hist.keras, ...hist.torch);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const slot = plotW / bins;
  context.strokeStyle = grid;
  context.beginPath();
  context.moveTo(pad.left, pad.top + plotH + 0.5);
  context.lineTo(width - pad.right, pad.top + plotH + 0.5);
  context.stroke();
  context.globalAlpha = 0.5;
  context.fillStyle = KERAS_COLOUR;
  for (let i = 0; i < bins; i++) {
    const barH = (hist.keras[i] / peak) * plotH;
    context.fillRect(pad.left + i * slot, pad.top + plotH - barH, Math.max(1, slot - 1), barH);
  }
  context.globalAlpha = 1;
  context.strokeStyle = TORCH_COLOUR;
  context.lineWidth = 1.5;
  context.beginPath();
  for (let i = 0; i < bins; i++) {
    const top = pad.top + plotH - (hist.torch[i] / peak) * plotH;
    if (i === 0) context.moveTo(pad.left, top);
    else context.lineTo(pad.left + i * slot, top);
    context.lineTo(pad.left + (i + 1) * slot, top);
  }
  context.stroke();
  context.fillStyle = fg;
  context.font = "10px system-ui, sans-serif";
  context.textAlign = "left";
  context.fillText(fmt(hist.low, 1), pad.left, height - 3);
  context.textAlign = "right";
  context.fillText(fmt(hist.high, 1), width - pad.right, height - 3);
}

// ------------------------------------------------------------------------------------------------
// The view
// ------------------------------------------------------------------------------------------------
function render({ model, el }) {
  const root = h("div", "k2t-widget");
  el.appendChild(root);
  const rows = model.get("rows") || [];
  root.dataset.rows = String(rows.length);
  const state = {
    tolerance: model.get("tolerance") || 1e-4,
    warnFraction: model.get("warn_fraction") || 0.1,
    selected: model.get("selected"),
    filter: "all",
    query: "",
    visible: rows.map((_, i) => i),
    range: [-1, -1],
  };
  let taint = { tolerance: null, marks: [] };
  const statusOfRow = (row) => {
    if (taint.tolerance !== state.tolerance) taint = { tolerance: state.tolerance, marks: taintOf(rows, state.tolerance) };
    return statusOf(row, state.tolerance, state.warnFraction, taint.marks[row.i]);
  };

  // -- header -------------------------------------------------------------------------------------
  const header = model.get("header") || {};
  const top = h("div", "k2t-header");
  const verdict = h("div", "k2t-verdict");
  const verdictIcon = h("span", "k2t-verdict-icon");
  const verdictText = h("span", "k2t-verdict-text");
  verdict.append(verdictIcon, verdictText);
  const counts = h("div", "k2t-counts");
  top.append(verdict, counts);
  const meta = h("div", "k2t-meta");
  const chip = (label, value, title) => {
    const node = h("span", "k2t-chip");
    node.append(h("span", "k2t-chip-label", label), h("span", "k2t-chip-value", value));
    if (title) node.title = title;
    meta.appendChild(node);
    return node;
  };
  const torchName = header.torch || "PyTorch";
  chip("models", `Keras “${header.model}” → PyTorch ${torchName}`);
  chip(
    "PyTorch",
    (header.torch_device || "?") + (header.tf32_disabled ? " · full float32" : ""),
    "device running the PyTorch model and the statistics" +
      (header.tf32_disabled ? "; TF32 was switched off while comparing (it rounds float32 to 10 bits)" : ""),
  );
  chip("Keras", header.keras_device || "?", "Keras backend and the device it ran on");
  chip("input", header.input || "?");
  chip(
    "mode",
    header.isolate ? "each layer fed Keras's inputs" : "end to end",
    header.isolate
      ? "isolate=True: every PyTorch layer got Keras's output of the layer before; each row is that layer's own error"
      : "the PyTorch model ran on its own: errors accumulate from the input on (compare(..., isolate=True) shows each layer's own error)",
  );
  const seconds = header.seconds || {};
  chip(
    "time",
    `${fmtSeconds(seconds.total)}`,
    `Keras ${fmtSeconds(seconds.keras)} · PyTorch ${fmtSeconds(seconds.torch)} · statistics ${fmtSeconds(
      seconds.statistics,
    )} (whole comparison, both forward passes included)`,
  ).classList.add("k2t-chip-time");
  root.append(top, meta);
  if (header.error) {
    const error = h("div", "k2t-error");
    error.append(h("strong", null, "The PyTorch forward pass raised: "), h("span", null, header.error));
    root.appendChild(error);
  }

  // -- toolbar ------------------------------------------------------------------------------------
  const toolbar = h("div", "k2t-toolbar");
  const tolGroup = h("label", "k2t-tol");
  tolGroup.append(h("span", "k2t-tol-label", "tolerance"));
  const tolRange = h("input", "k2t-tol-range");
  tolRange.type = "range";
  tolRange.min = "-9";
  tolRange.max = "-1";
  tolRange.step = "0.25";
  tolRange.title = "relative error (max|Δ| / max|Keras|) above which a layer fails";
  const tolText = h("input", "k2t-tol-text");
  tolText.type = "text";
  tolText.spellcheck = false;
  tolText.title = "tolerance on the relative error; within a tenth of it a layer is ok, above it warns";
  tolGroup.append(tolRange, tolText);
  const filters = h("div", "k2t-seg");
  const allButton = h("button", "k2t-seg-button");
  const issueButton = h("button", "k2t-seg-button");
  allButton.type = issueButton.type = "button";
  filters.append(allButton, issueButton);
  const search = h("input", "k2t-search");
  search.type = "search";
  search.placeholder = "filter layers…";
  const spacer = h("div", "k2t-spacer");
  toolbar.append(tolGroup, filters, search, spacer);
  const code = model.get("code") || "";
  const codeBox = h("pre", "k2t-code");
  codeBox.hidden = true;
  if (code) {
    const copy = h("button", "k2t-button k2t-copy", "Copy PyTorch code");
    copy.type = "button";
    copy.title = "copy the generated PyTorch module to the clipboard";
    copy.addEventListener("click", () => copyText(code, copy));
    const show = h("button", "k2t-button k2t-show-code", "Show code");
    show.type = "button";
    show.addEventListener("click", () => {
      codeBox.hidden = !codeBox.hidden;
      show.textContent = codeBox.hidden ? "Show code" : "Hide code";
    });
    codeBox.textContent = code;
    toolbar.append(copy, show);
  }
  root.append(toolbar, codeBox);

  // -- error profile ------------------------------------------------------------------------------
  const profileBox = h("div", "k2t-profile");
  const profileLabel = h("div", "k2t-profile-label", "relative error by layer (log scale)");
  const profile = h("canvas", "k2t-profile-canvas");
  profile.title = "each bar is one layer output, in forward order; click to select it";
  profileBox.append(profileLabel, profile);
  root.appendChild(profileBox);

  // -- table --------------------------------------------------------------------------------------
  const columns = [
    ["status", "k2t-c-status"],
    ["#", "k2t-c-index"],
    ["Keras layer", "k2t-c-layer"],
    ["class", "k2t-c-class"],
    ["Keras shape", "k2t-c-shape"],
    ["PyTorch", "k2t-c-module"],
    ["torch shape", "k2t-c-shape"],
    ["params", "k2t-c-params"],
    ["max |Δ|", "k2t-c-num"],
    ["rel. error", "k2t-c-num"],
    ["cosine", "k2t-c-num"],
  ];
  const wrap = h("div", "k2t-table-wrap");
  wrap.tabIndex = 0;
  const table = h("table", "k2t-table");
  const colgroup = h("colgroup");
  for (const [, cls] of columns) colgroup.appendChild(h("col", cls));
  const thead = h("thead");
  const headRow = h("tr");
  for (const [title, cls] of columns) {
    const th = h("th", cls, title);
    th.title = title; // the full header where a narrow column ellipsises it
    headRow.appendChild(th);
  }
  thead.appendChild(headRow);
  const tbody = h("tbody");
  table.append(colgroup, thead, tbody);
  wrap.appendChild(table);
  const footer = h("div", "k2t-footer");
  const detail = h("div", "k2t-detail");
  root.append(wrap, footer, detail);

  function makeRow(index) {
    const row = rows[index];
    const status = statusOfRow(row);
    const tr = h("tr", `k2t-row k2t-row-${status}`);
    tr.dataset.index = String(index);
    tr.dataset.status = status;
    if (index === state.selected) tr.classList.add("k2t-selected");
    if (row.note) tr.title = row.note;
    const paramsMismatch = row.tp !== null && row.tp !== undefined && row.tp !== row.kp;
    const statusCell = h("td", "k2t-c-status");
    statusCell.appendChild(h("span", `k2t-badge k2t-badge-${status}`, status));
    tr.appendChild(statusCell);
    const cells = [
      [String(row.i), "k2t-c-index"],
      [row.outl ? `${row.layer} · ${row.outl}` : row.layer, "k2t-c-layer"],
      [row.cls, "k2t-c-class"],
      [fmtShape(row.kshape), "k2t-c-shape"],
      [row.tmod || "·", "k2t-c-module" + (row.tmod ? "" : " k2t-dim")],
      [fmtShape(row.tshape), "k2t-c-shape"],
      [
        paramsMismatch ? `${fmtInt(row.kp)} ≠ ${fmtInt(row.tp)}` : fmtInt(row.kp),
        "k2t-c-params" + (paramsMismatch ? " k2t-mismatch" : ""),
      ],
      [fmt(row.mad), "k2t-c-num"],
      [row.cmp ? (row.rel === null ? "∞" : fmt(row.rel)) : "—", "k2t-c-num"],
      [fmtCosine(row.cos), "k2t-c-num"],
    ];
    for (const [text, cls] of cells) {
      const td = h("td", cls, text);
      if (cls.startsWith("k2t-c-layer") || cls.startsWith("k2t-c-module")) td.title = text;
      if (cls === "k2t-c-layer" && row.conv) td.title = `${text} · converter: ${row.conv}`;
      if (cls.startsWith("k2t-c-params")) {
        td.title = `Keras ${fmtInt(row.kp)} · PyTorch ${row.tp === null || row.tp === undefined ? "—" : fmtInt(row.tp)}`;
      }
      if (cls === "k2t-c-layer" && row.out) {
        td.prepend(h("span", "k2t-out", "⇥"));
        td.title = `${text} (a model output)` + (row.conv ? ` · converter: ${row.conv}` : "");
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function spacerRow(height) {
    const tr = h("tr", "k2t-spacer-row");
    const td = h("td");
    td.colSpan = columns.length;
    td.style.height = `${height}px`;
    tr.appendChild(td);
    return tr;
  }

  function renderRows(force) {
    const count = state.visible.length;
    let start = 0;
    let end = count;
    if (count > VIRTUAL_ABOVE) {
      const scroll = wrap.scrollTop;
      const viewHeight = wrap.clientHeight || 360;
      start = Math.max(0, Math.floor(scroll / ROW_HEIGHT) - OVERSCAN);
      end = Math.min(count, Math.ceil((scroll + viewHeight) / ROW_HEIGHT) + OVERSCAN);
    }
    if (!force && start === state.range[0] && end === state.range[1]) return;
    state.range = [start, end];
    const fragment = document.createDocumentFragment();
    if (start > 0) fragment.appendChild(spacerRow(start * ROW_HEIGHT));
    for (let position = start; position < end; position++) {
      fragment.appendChild(makeRow(state.visible[position]));
    }
    if (end < count) fragment.appendChild(spacerRow((count - end) * ROW_HEIGHT));
    tbody.replaceChildren(fragment);
    if (count === 0) {
      const empty = spacerRow(ROW_HEIGHT);
      empty.firstChild.textContent = "no layer matches";
      empty.firstChild.className = "k2t-empty";
      tbody.replaceChildren(empty);
    }
  }

  let frame = 0;
  wrap.addEventListener("scroll", () => {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      renderRows(false);
    });
  });
  tbody.addEventListener("click", (event) => {
    const tr = event.target.closest("tr.k2t-row");
    if (tr) select(Number(tr.dataset.index), false);
  });
  wrap.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
    event.preventDefault();
    const position = state.visible.indexOf(state.selected);
    const next = position < 0 ? 0 : position + (event.key === "ArrowDown" ? 1 : -1);
    if (next >= 0 && next < state.visible.length) select(state.visible[next], true);
  });

  function scrollToRow(index) {
    const position = state.visible.indexOf(index);
    if (position < 0) return;
    const headHeight = thead.getBoundingClientRect().height || ROW_HEIGHT;
    const top = position * ROW_HEIGHT;
    const view = wrap.clientHeight - headHeight;
    if (top < wrap.scrollTop) wrap.scrollTop = top;
    else if (top + ROW_HEIGHT > wrap.scrollTop + view) wrap.scrollTop = top + ROW_HEIGHT - view;
  }

  // -- filtering, statuses, verdict -----------------------------------------------------------------
  function applyFilter() {
    const query = state.query.toLowerCase();
    state.visible = [];
    for (let i = 0; i < rows.length; i++) {
      const row = rows[i];
      if (state.filter === "issues") {
        const status = statusOfRow(row);
        if (status !== "fail" && status !== "drift" && status !== "warn") continue;
      }
      if (query) {
        const haystack = `${row.layer} ${row.outl || ""} ${row.cls} ${row.tmod}`.toLowerCase();
        if (!haystack.includes(query)) continue;
      }
      state.visible.push(i);
    }
    state.range = [-1, -1];
    renderRows(true);
  }

  function refresh() {
    const tally = { ok: 0, warn: 0, drift: 0, fail: 0, random: 0, skip: 0 };
    let first = null;
    for (const row of rows) {
      const status = statusOfRow(row);
      tally[status] += 1;
      if (status === "fail" && first === null) first = row;
    }
    const compared = rows.length - tally.skip;
    const ok = !header.error && compared > 0 && tally.fail === 0;
    const kind = !ok ? "fail" : tally.drift ? "drift" : "ok";
    verdict.className = `k2t-verdict k2t-verdict-${kind}`;
    verdictIcon.textContent = ok ? "✔" : "✖";
    if (header.error) {
      verdictText.textContent = "The PyTorch forward pass failed";
    } else if (compared === 0) {
      verdictText.textContent = "Nothing compared: no Keras layer had a PyTorch counterpart";
    } else if (ok && tally.drift) {
      verdictText.textContent =
        `No conversion error: every layer matches fed Keras's inputs; ${tally.drift} of ${compared} ` +
        "drift end to end (float32 round-off)";
      verdictText.title = header.summary || "";
    } else if (ok) {
      verdictText.textContent =
        `All ${compared - tally.random} compared layer outputs match` +
        (tally.random ? ` (${tally.random} random at inference, not compared by value)` : "");
    } else {
      verdictText.textContent = `${tally.fail} of ${compared} layer outputs differ — first: ${first.layer} (${first.cls})`;
    }
    counts.replaceChildren();
    for (const status of ["ok", "warn", "drift", "fail", "random", "skip"]) {
      if (!tally[status] && status !== "ok") continue;
      const badge = h("span", `k2t-badge k2t-badge-${status}`, `${tally[status]} ${status}`);
      badge.title = {
        ok: "relative error within a tenth of the tolerance",
        warn: "within the tolerance, but above a tenth of it",
        drift:
          "above the tolerance end to end, but within it fed Keras's own inputs, as is every layer " +
          "before it: float32 round-off amplified through the layers, not a conversion error",
        fail: "above the tolerance (or NaN, or shapes that do not line up)",
        random:
          "random at inference (keras.random): the two sides draw different values, so the values " +
          "are not compared; the next layers are fed Keras's output",
        skip: "no PyTorch counterpart to compare with",
      }[status];
      counts.appendChild(badge);
    }
    allButton.textContent = `All ${rows.length}`;
    issueButton.textContent = `Issues ${tally.fail + tally.drift + tally.warn}`;
    allButton.classList.toggle("k2t-active", state.filter === "all");
    issueButton.classList.toggle("k2t-active", state.filter === "issues");
    tolText.value = String(Number(state.tolerance.toPrecision(3)));
    tolRange.value = String(Math.log10(state.tolerance));
    footer.textContent =
      `${rows.length} layer output${rows.length === 1 ? "" : "s"}` +
      (state.visible.length !== rows.length ? ` · ${state.visible.length} shown` : "") +
      " · ok: rel. error ≤ tolerance/10 · warn: ≤ tolerance · fail: above · drift: above, but exact on Keras's inputs" +
      (tally.random ? " · random: random at inference, not compared by value" : "") +
      " · click a row for its activations";
    applyFilter();
    drawProfile();
  }

  function setTolerance(value, fromModel) {
    if (!(value > 0)) return;
    state.tolerance = value;
    if (!fromModel) {
      model.set("tolerance", value);
      model.save_changes();
    }
    refresh();
    renderDetail();
  }
  tolRange.addEventListener("input", () => setTolerance(10 ** Number(tolRange.value), false));
  const commitTolerance = () => {
    const value = parseTolerance(tolText.value);
    if (value === null) tolText.value = String(state.tolerance);
    else if (value !== state.tolerance) setTolerance(value, false);
  };
  tolText.addEventListener("change", commitTolerance);
  tolText.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      commitTolerance();
    }
  });
  // Typing in the widget's inputs must not trigger notebook shortcuts (a, b, dd, Enter...).
  root.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) event.stopPropagation();
  });
  allButton.addEventListener("click", () => {
    state.filter = "all";
    refresh();
  });
  issueButton.addEventListener("click", () => {
    state.filter = "issues";
    refresh();
  });
  search.addEventListener("input", () => {
    state.query = search.value;
    applyFilter();
  });

  // -- error profile --------------------------------------------------------------------------------
  function drawProfile() {
    const width = Math.max(200, profileBox.clientWidth || root.clientWidth || 800);
    const height = 56;
    const context = setupCanvas(profile, width, height);
    const fg = cssVar(root, "--k2t-fg-dim", "#59636e");
    const count = rows.length;
    const lowExp = -10;
    const topBand = 13; // the label's line
    const y = (rel) => {
      const exponent = Math.max(lowExp, Math.min(0, Math.log10(Math.max(rel, 1e-30))));
      return height - 2 - ((exponent - lowExp) / -lowExp) * (height - 4 - topBand);
    };
    const slot = Math.min(16, width / Math.max(1, count));
    const colours = {
      ok: "#2da44e",
      warn: "#bf8700",
      drift: "#0969da",
      fail: "#cf222e",
      random: "#8250df",
      skip: "#8c959f",
    };
    for (let i = 0; i < count; i++) {
      const row = rows[i];
      const status = statusOfRow(row);
      context.fillStyle = colours[status];
      const x = i * slot;
      const barW = Math.max(1, slot - (slot > 3 ? 1 : 0));
      if (status === "skip" || status === "random") {
        context.fillRect(x, height - 3, barW, 2);
        continue;
      }
      const top = row.rel === null ? y(1) : y(row.rel);
      context.fillRect(x, top, barW, height - 1 - top);
    }
    context.strokeStyle = "#cf222e";
    context.setLineDash([4, 3]);
    context.beginPath();
    const tolY = Math.round(y(state.tolerance)) + 0.5;
    context.moveTo(0, tolY);
    context.lineTo(width, tolY);
    context.stroke();
    context.setLineDash([]);
    context.fillStyle = fg;
    context.font = "10px system-ui, sans-serif";
    context.textAlign = "right";
    context.fillText(`tolerance ${fmt(state.tolerance, 0)}`, width - 4, 10);
    if (state.selected >= 0 && state.selected < count) {
      context.strokeStyle = cssVar(root, "--k2t-fg", "#1f2328");
      context.lineWidth = 1.5;
      context.strokeRect(state.selected * slot + 0.5, topBand - 0.5, Math.max(2, slot), height - topBand);
    }
  }
  profile.addEventListener("click", (event) => {
    const box = profile.getBoundingClientRect();
    const slot = Math.min(16, box.width / Math.max(1, rows.length));
    const index = Math.floor((event.clientX - box.left) / slot);
    if (index >= 0 && index < rows.length) {
      if (!state.visible.includes(index)) {
        state.filter = "all";
        state.query = "";
        search.value = "";
        refresh();
      }
      select(index, true);
    }
  });

  // -- selection and the detail panel ---------------------------------------------------------------
  function select(index, scroll) {
    if (index === state.selected && !scroll) return;
    state.selected = index;
    for (const tr of tbody.querySelectorAll("tr.k2t-row")) {
      tr.classList.toggle("k2t-selected", Number(tr.dataset.index) === index);
    }
    if (scroll) {
      scrollToRow(index);
      renderRows(true);
    }
    if (model.get("selected") !== index) {
      model.set("selected", index);
      model.save_changes();
    }
    drawProfile();
    renderDetail();
  }

  function renderDetail() {
    const index = state.selected;
    detail.replaceChildren();
    if (index === null || index === undefined || index < 0 || index >= rows.length) {
      detail.appendChild(h("div", "k2t-hint", "Click a layer to compare its activations."));
      return;
    }
    const row = rows[index];
    const status = statusOfRow(row);
    const title = h("div", "k2t-detail-title");
    title.append(
      h("span", `k2t-badge k2t-badge-${status}`, status),
      h("span", "k2t-detail-name", row.layer + (row.outl ? ` · ${row.outl}` : "") + (row.out ? " (model output)" : "")),
      h("span", "k2t-dim", `${row.cls} · Keras ${fmtShape(row.kshape)} ↔ PyTorch ${row.tmod || "(forward)"} ${fmtShape(row.tshape)}`),
    );
    detail.appendChild(title);
    if (row.note) detail.appendChild(h("div", "k2t-note", row.note));
    if (!row.cmp) {
      detail.appendChild(h("div", "k2t-hint", "Not compared."));
      return;
    }
    const metaAll = model.get("detail_meta") || {};
    const entry = (metaAll.rows || {})[String(index)];
    if (!entry) {
      detail.appendChild(
        h("div", "k2t-hint", metaAll.complete || row.kind === null ? "No preview for this layer." : "Loading activations…"),
      );
      return;
    }
    const bytes = bytesOf(model.get("detail"));
    const fg = cssVar(root, "--k2t-fg", "#1f2328");
    const grid = cssVar(root, "--k2t-grid", "#e6e9ed");
    const body = h("div", "k2t-detail-body");
    const left = h("div", "k2t-detail-maps");
    const right = h("div", "k2t-detail-side");
    body.append(left, right);
    detail.appendChild(body);
    left.appendChild(h("div", "k2t-detail-label", entry.label));

    if (entry.kind === "image") {
      const [channels, height, width] = entry.shape;
      const plane = height * width;
      const kerasBytes = bytes.subarray(entry.keras, entry.keras + channels * plane);
      const torchBytes = bytes.subarray(entry.torch, entry.torch + channels * plane);
      const diffBytes = bytes.subarray(entry.diff, entry.diff + channels * plane);
      const scaleDenominator = Math.max(row.mad || 0, state.tolerance * (row.kmax || 0)) || 1;
      const gridBox = h("div", "k2t-maps");
      gridBox.append(h("div"), h("div", "k2t-map-head", "Keras"), h("div", "k2t-map-head", "PyTorch"), h("div", "k2t-map-head", "|Δ|"));
      for (let c = 0; c < channels; c++) {
        const channelLabel = h("div", "k2t-map-channel");
        channelLabel.append(
          h("div", null, entry.channels && entry.channels.length ? `ch ${entry.channels[c]}` : ""),
          h("div", "k2t-dim", `${fmt(entry.low[c], 1)} … ${fmt(entry.high[c], 1)}`),
        );
        gridBox.appendChild(channelLabel);
        const offset = c * plane;
        for (const [source, colour, mapper] of [
          [kerasBytes, VIRIDIS_LUT, (i) => source0(kerasBytes, offset, i)],
          [torchBytes, VIRIDIS_LUT, (i) => source0(torchBytes, offset, i)],
          [
            diffBytes,
            MAGMA_LUT,
            (i) => ((diffBytes[offset + i] / 255) * (entry.diff_high[c] || 0)) / scaleDenominator,
          ],
        ]) {
          const cell = h("div", "k2t-map");
          const canvas = h("canvas", "k2t-map-canvas");
          // A sequence is one (features × time) map, not a stack of channels: twice the room.
          drawMap(canvas, mapper, height, width, colour, entry.channels.length ? MAP_BOX : 2 * MAP_BOX);
          cell.appendChild(canvas);
          if (source === diffBytes) cell.title = `|Δ| up to ${fmt(entry.diff_high[c], 2)} in this channel`;
          gridBox.appendChild(cell);
        }
      }
      left.appendChild(gridBox);
      const legend = h("div", "k2t-legend");
      legend.append(
        legendBar(VIRIDIS_LUT, "activation (shared scale per channel)"),
        legendBar(MAGMA_LUT, `|Δ|: black = 0, bright = ${fmt(scaleDenominator, 1)}`),
      );
      left.appendChild(legend);
    } else if (entry.kind === "lines") {
      const [channels, length] = entry.shape;
      const width = Math.max(320, Math.min(640, (detail.clientWidth || 900) - 330));
      const keys = h("div", "k2t-legend");
      keys.append(swatch(KERAS_COLOUR, "Keras"), swatch(TORCH_COLOUR, "PyTorch"), swatch(DIFF_COLOUR, "|Δ|"));
      left.appendChild(keys);
      for (let c = 0; c < channels; c++) {
        const keras = float32At(bytes, entry.keras + c * length * 4, length);
        const torch = float32At(bytes, entry.torch + c * length * 4, length);
        if (channels > 1) left.appendChild(h("div", "k2t-dim", `channel ${c}`));
        const plot = h("canvas", "k2t-plot");
        drawSeries(plot, keras, torch, width, channels > 1 ? 110 : 170, fg, grid);
        const bars = h("canvas", "k2t-plot");
        drawDiffBars(bars, keras, torch, width, 42, fg);
        left.append(plot, bars);
      }
    }

    if (entry.hist) {
      right.appendChild(h("div", "k2t-detail-label", "value histogram (whole batch)"));
      const histCanvas = h("canvas", "k2t-hist");
      drawHistogram(histCanvas, entry.hist, 260, 120, fg, grid);
      right.appendChild(histCanvas);
      const keys = h("div", "k2t-legend");
      keys.append(swatch(KERAS_COLOUR, "Keras"), swatch(TORCH_COLOUR, "PyTorch"));
      right.appendChild(keys);
    }
    const statsTable = h("table", "k2t-stats");
    const s = entry.stats || {};
    const statRows = [
      ["", "Keras", "PyTorch"],
      ["mean", fmt(s.keras_mean, 3), fmt(s.torch_mean, 3)],
      ["std", fmt(s.keras_std, 3), fmt(s.torch_std, 3)],
      ["max |x|", fmt(s.keras_absmax, 3), fmt(s.torch_absmax, 3)],
    ];
    for (const [i, cells] of statRows.entries()) {
      const tr = h("tr");
      for (const cell of cells) tr.appendChild(h(i === 0 ? "th" : "td", null, cell));
      statsTable.appendChild(tr);
    }
    right.appendChild(statsTable);
    const summary = h("table", "k2t-stats");
    for (const [label, value] of [
      ["max |Δ|", fmt(row.mad, 3)],
      ["rel. error", row.rel === null ? "∞ / NaN" : fmt(row.rel, 3)],
      ["cosine", row.cos === null ? "—" : row.cos.toFixed(7)],
      ["tolerance", fmt(state.tolerance, 1)],
    ]) {
      const tr = h("tr");
      tr.append(h("th", null, label), h("td", null, value));
      summary.appendChild(tr);
    }
    right.appendChild(summary);
  }

  function source0(array, offset, i) {
    return array[offset + i] / 255;
  }

  function legendBar(table, text) {
    const box = h("span", "k2t-legend-item");
    const canvas = h("canvas", "k2t-legend-bar");
    const context = setupCanvas(canvas, 64, 8);
    for (let x = 0; x < 64; x++) {
      const q = Math.round((x / 63) * 255);
      context.fillStyle = `rgb(${table[q * 3]},${table[q * 3 + 1]},${table[q * 3 + 2]})`;
      context.fillRect(x, 0, 1, 8);
    }
    box.append(canvas, h("span", null, text));
    return box;
  }

  function swatch(colour, text) {
    const box = h("span", "k2t-legend-item");
    const mark = h("span", "k2t-swatch");
    mark.style.background = colour;
    box.append(mark, h("span", null, text));
    return box;
  }

  function copyText(text, button) {
    const done = (ok) => {
      const label = button.textContent;
      button.textContent = ok ? "Copied ✓" : "Copy failed";
      setTimeout(() => (button.textContent = label), 1400);
    };
    const fallback = () => {
      const area = document.createElement("textarea");
      area.value = text;
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      let ok = false;
      try {
        ok = document.execCommand("copy");
      } catch (error) {
        ok = false;
      }
      area.remove();
      done(ok);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(() => done(true), fallback);
    } else {
      fallback();
    }
  }

  // -- model events ---------------------------------------------------------------------------------
  const onTolerance = () => {
    const value = model.get("tolerance");
    if (value !== state.tolerance) setTolerance(value, true);
  };
  const onDetail = () => renderDetail();
  const onSelected = () => {
    const value = model.get("selected");
    if (value !== state.selected) select(value, true);
  };
  model.on("change:tolerance", onTolerance);
  model.on("change:detail_meta", onDetail);
  model.on("change:selected", onSelected);
  let resizeObserver = null;
  if (typeof ResizeObserver !== "undefined") {
    let lastWidth = 0;
    resizeObserver = new ResizeObserver(() => {
      const width = profileBox.clientWidth;
      if (width && width !== lastWidth) {
        lastWidth = width;
        drawProfile();
      }
    });
    resizeObserver.observe(profileBox);
  }

  refresh();
  if (state.selected >= 0) requestAnimationFrame(() => scrollToRow(state.selected));
  renderDetail();

  return () => {
    model.off("change:tolerance", onTolerance);
    model.off("change:detail_meta", onDetail);
    model.off("change:selected", onSelected);
    if (resizeObserver) resizeObserver.disconnect();
  };
}

export default { render };
