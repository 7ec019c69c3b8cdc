// The page of `stride serve`: a canvas to draw on and a place to drop a picture; every change is
// sent to POST /api/predict (debounced while drawing, one request at a time, the latest picture
// winning) and the answer drawn: top classes, the input as the network sees it, the feature maps
// of every layer. GET /api/model gives the layer table and the first layer's filters.
//
// `?demo=draw` draws a pair of trousers through the same stroke functions the pointer uses, so a
// headless browser exercises the whole path: canvas → PNG → request → answer → page;
// `?demo=not-a-picture` drops a CSV file through the drop zone's function.
// Text from the server is only ever set as textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const pen = canvas.getContext("2d");
const state = { model: null, drawing: false, last: null, timer: 0, busy: false, queued: null };

/** The page's progress, for people and tests: loading, ready, predicting, predicted, error, summary. */
function setState(name) {
  document.body.dataset.state = name;
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text;
  box.hidden = !text;
}

/** An element with attributes and children (strings become text). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

const thousands = (n) => Number(n).toLocaleString("en-US");
const percent = (p) => `${(100 * p).toFixed(1)}%`;
const number = (v) => (Math.abs(v) >= 100 || v === 0 ? v.toFixed(0) : v.toPrecision(3));
function bytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(0)} KiB`;
  return `${n} bytes`;
}

// ---- drawing ----

function clearCanvas() {
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, canvas.width, canvas.height);
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * canvas.width) / box.width,
    y: ((event.clientY - box.top) * canvas.height) / box.height,
  };
}

function strokeStart(p) {
  state.drawing = true;
  state.last = p;
  strokeTo(p);
}

function strokeTo(p) {
  pen.strokeStyle = "#fff";
  pen.lineWidth = Number($("brush").value);
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.beginPath();
  pen.moveTo(state.last.x, state.last.y);
  pen.lineTo(p.x, p.y);
  pen.stroke();
  state.last = p;
  schedule();
}

function strokeEnd() {
  state.drawing = false;
  sendCanvas();
}

canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  strokeStart(point(event));
});
canvas.addEventListener("pointermove", (event) => {
  if (state.drawing) strokeTo(point(event));
});
for (const name of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(name, () => {
    if (state.drawing) strokeEnd();
  });
}

$("clear").addEventListener("click", () => {
  clearTimeout(state.timer);
  state.timer = 0;
  clearCanvas();
  showMessage("");
  $("top").replaceChildren();
  $("maps").replaceChildren();
  $("input-picture").removeAttribute("src");
  $("seen-caption").textContent = "draw something";
  $("timing").textContent = "";
  setState("ready");
});

// ---- files ----

function takeFile(file) {
  if (!file || !state.model) return;
  const max = state.model.limits.max_bytes;
  if (file.size > max) {
    showMessage(`${file.name} is ${bytes(file.size)}; the most this page accepts is ${bytes(max)}`);
    setState("error");
    return;
  }
  // Shown on the canvas when the browser can read it; the server decides whether it is a picture.
  createImageBitmap(file)
    .then((bitmap) => {
      clearCanvas();
      const scale = Math.min(canvas.width / bitmap.width, canvas.height / bitmap.height);
      const [w, h] = [bitmap.width * scale, bitmap.height * scale];
      pen.drawImage(bitmap, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    })
    .catch(() => {});
  send(file, file.name);
}

$("file").addEventListener("change", (event) => takeFile(event.target.files[0]));
for (const target of [$("drop"), canvas]) {
  target.addEventListener("dragover", (event) => {
    event.preventDefault();
    $("drop").classList.add("over");
  });
  target.addEventListener("dragleave", () => $("drop").classList.remove("over"));
  target.addEventListener("drop", (event) => {
    event.preventDefault();
    $("drop").classList.remove("over");
    takeFile(event.dataTransfer.files[0]);
  });
}

// ---- predicting ----

/** While drawing, a prediction every 120 ms at most (one request at a time, the latest winning). */
function schedule() {
  if (!state.timer) state.timer = setTimeout(sendCanvas, 120);
}

function sendCanvas() {
  clearTimeout(state.timer);
  state.timer = 0;
  if (!state.model || !state.model.predicts) return;
  canvas.toBlob((blob) => send(blob, "the drawing"), "image/png");
}

async function send(blob, what) {
  if (state.busy) {
    state.queued = [blob, what];
    return;
  }
  state.busy = true;
  setState("predicting");
  try {
    const response = await fetch("/api/predict", {
      method: "POST",
      headers: { "Content-Type": blob.type || "application/octet-stream" },
      body: blob,
    });
    let answer;
    try {
      answer = await response.json();
    } catch {
      answer = { error: `the server answered ${response.status} without an explanation` };
    }
    if (response.ok) {
      showMessage("");
      render(answer, what);
      setState("predicted");
    } else {
      showMessage(`${what}: ${answer.error} (HTTP ${response.status})`);
      setState("error");
    }
  } catch (error) {
    showMessage(`the server did not answer (${error.message}); is \`stride serve\` still running?`);
    setState("error");
  } finally {
    state.busy = false;
    if (state.queued) {
      const [next, name] = state.queued;
      state.queued = null;
      send(next, name);
    }
  }
}

function render(answer, what) {
  $("top").replaceChildren(
    ...answer.top.map((p) =>
      el(
        "li",
        { "data-class": p.class },
        el("span", { class: "name" }, p.name),
        el("span", { class: "bar" }, el("span", { style: `width: ${(100 * p.probability).toFixed(1)}%` })),
        el("span", { class: "p" }, percent(p.probability)),
      ),
    ),
  );
  const [c, h, w] = state.model.input;
  $("input-picture").src = answer.input;
  $("seen-caption").textContent =
    `${what} at ${w}×${h}×${c}` +
    (answer.inverted ? ", inverted (its border was light; the training pictures are light on black)" : "");
  $("maps").replaceChildren(
    ...answer.layers.map((layer) =>
      el(
        "figure",
        { class: "layer", "data-path": layer.path },
        el("figcaption", {}, el("b", {}, layer.path), " ", el("span", { class: "volume" }, layer.shape)),
        el("img", { src: layer.png, alt: `the feature maps of ${layer.path}, ${layer.shape}` }),
        el("small", {}, `${layer.layer}; values ${number(layer.low)} to ${number(layer.high)}`),
      ),
    ),
  );
  $("timing").textContent = `computed in ${answer.milliseconds.toFixed(1)} ms on the server`;
}

// ---- the network ----

function renderModel(model) {
  $("model-title").textContent = model.title;
  $("model-source").textContent = model.source;
  $("layers").tBodies[0].replaceChildren(
    ...model.layers.map((row) =>
      el(
        "tr",
        { "data-path": row.path },
        el("td", {}, el("code", {}, row.path)),
        el("td", { class: "type", title: row.layer }, row.layer),
        el("td", { class: "n" }, row.output + (row.floored ? " *" : "")),
        el("td", { class: "n" }, thousands(row.parameters)),
        el("td", { class: "n" }, thousands(row.mult_adds)),
      ),
    ),
  );
  const [c, h, w] = model.input;
  $("layers").tFoot.replaceChildren(
    el(
      "tr",
      {},
      el("td", {}, "total"),
      el("td", {}, `input ${w}×${h}×${c}`),
      el("td", { class: "n" }, model.output),
      el("td", { class: "n" }, thousands(model.parameters)),
      el("td", { class: "n" }, thousands(model.mult_adds)),
    ),
  );
  if (model.layers.some((row) => row.floored)) {
    $("layers").tFoot.append(el("tr", {}, el("td", { colspan: 5 }, "* the size rule dropped a remainder")));
  }
  if (model.filters) {
    const f = model.filters;
    $("filters-picture").src = f.png;
    $("filters-caption").textContent =
      `${f.path}: weight ${f.shape} (K×C×F×F), ${f.layer}. Each tile is scaled to its own smallest ` +
      `(black) and largest (white) weight; the layer's range is ${number(f.low)} to ${number(f.high)}. ` +
      `Shown as applied: convolution here is cross-correlation, so the tiles are not flipped.`;
  } else {
    $("filters-panel").hidden = true;
  }
  if (model.predicts) {
    $("classes").textContent = `Its ${model.classes.length} classes: ${model.classes.join(", ")}.`;
  }
}

/** Trousers in three strokes (a waistband and two legs), through the pointer's own functions. */
function drawDemo() {
  $("brush").value = 40;
  const strokes = [
    [[92, 42], [188, 42]],
    [[104, 42], [96, 250]],
    [[176, 42], [184, 250]],
  ];
  for (const [[x0, y0], [x1, y1]] of strokes) {
    strokeStart({ x: x0, y: y0 });
    for (let t = 0.1; t <= 1.0001; t += 0.1) strokeTo({ x: x0 + t * (x1 - x0), y: y0 + t * (y1 - y0) });
    strokeEnd();
  }
}

async function start() {
  let model;
  try {
    const response = await fetch("/api/model");
    model = await response.json();
    if (!response.ok) throw new Error(model.error);
  } catch (error) {
    showMessage(`cannot load the network from the server: ${error.message}`);
    setState("error");
    return;
  }
  state.model = model;
  renderModel(model);
  if (!model.predicts) {
    document.body.classList.add("summary-only");
    setState("summary");
    return;
  }
  clearCanvas();
  setState("ready");
  const demo = new URLSearchParams(location.search).get("demo");
  if (demo === "draw") drawDemo();
  // A file that is no picture, dropped as a person would drop it: the server's refusal is shown.
  if (demo === "not-a-picture") takeFile(new File(["name,size\nboot,9\n"], "notes.csv", { type: "text/csv" }));
}

start();
