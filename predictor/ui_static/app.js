// The try-it page. It reads the served model's metadata, builds one input per
// feature from it, and predicts through the public v1 API. Every URL is relative to
// this page, so it works behind a port-forward, an Ingress path prefix or
// `kubectl proxy`. Text that comes from the server is only ever set as textContent.

const POLL_MS = 2000;
const PREDICT_DELAY_MS = 120;
const BATCH_CHUNK_ROWS = 500;
const ROW_RETRY_CONCURRENCY = 4;
const IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
const PRESETS = [
  { label: "setosa", values: [5.1, 3.5, 1.4, 0.2] },
  { label: "versicolor", values: [6.5, 2.8, 4.6, 1.5] },
  { label: "virginica", values: [7.6, 3.0, 6.6, 2.2] },
];
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

const state = {
  model: new URLSearchParams(window.location.search).get("model"),
  schema: null,
  version: null,
  ready: false,
  predictSeq: 0,
  predictTimer: null,
  batchTable: null,
};

class Unreachable extends Error {}

function byId(id) {
  return document.getElementById(id);
}

// An element with the given attributes; "text" sets textContent, never markup.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

async function call(path, options = {}) {
  try {
    const response = await fetch(path, { cache: "no-store", ...options });
    const text = await response.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    return { status: response.status, body };
  } catch (error) {
    throw new Unreachable(String(error));
  }
}

function serverMessage(answer) {
  if (answer.body && typeof answer.body.error === "string") return answer.body.error;
  return `the server answered HTTP ${answer.status}`;
}

function modelPath(suffix) {
  return `../v1/models/${encodeURIComponent(state.model)}${suffix}`;
}

async function predict(instances) {
  return call(modelPath(":predict"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ instances, parameters: { probabilities: true } }),
  });
}

function setStatus(kind, message) {
  const status = byId("status");
  status.dataset.state = kind;
  status.textContent = message;
}

// Today's metadata has feature_names, class_names and feature_stats; a newer one
// adds features (name, unit, accepted min and max) and classes. Read either.
function readSchema(meta) {
  const stats = meta.feature_stats || {};
  let features;
  if (Array.isArray(meta.features)) {
    features = meta.features.map((feature) => ({
      name: String(feature.name),
      unit: feature.unit == null ? "" : String(feature.unit),
      min: Number(feature.min),
      max: Number(feature.max),
      accepted: true,
    }));
  } else {
    features = (meta.feature_names || []).map((name) => ({
      name: String(name),
      unit: "",
      min: Number((stats[name] || {}).min),
      max: Number((stats[name] || {}).max),
      accepted: false,
    }));
  }
  for (const feature of features) {
    if (!Number.isFinite(feature.min) || !Number.isFinite(feature.max)) {
      feature.min = 0;
      feature.max = 10;
      feature.accepted = null;
    }
    const mean = Number((stats[feature.name] || {}).mean);
    feature.start = Number.isFinite(mean) ? mean : (feature.min + feature.max) / 2;
  }
  const classes = Array.isArray(meta.classes) ? meta.classes : meta.class_names || [];
  return { features, classes: classes.map(String) };
}

function sameFeatures(a, b) {
  return JSON.stringify(a.features) === JSON.stringify(b.features);
}

function readableName(name) {
  return name.replaceAll("_", " ");
}

function rounded(value, digits) {
  const scale = 10 ** digits;
  return String(Math.round(value * scale) / scale);
}

function percent(value) {
  return Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : "";
}

function buildInputs(schema) {
  const form = byId("features");
  form.replaceChildren();
  schema.features.forEach((feature, index) => {
    const id = `feature-${index}`;
    // The slider moves in round steps, inside the range.
    const range = feature.max - feature.min;
    const step = range > 0 ? 10 ** Math.floor(Math.log10(range / 20)) : 1;
    const decimals = Math.max(0, -Math.floor(Math.log10(step)));
    const low = Number((Math.ceil(feature.min / step) * step).toFixed(decimals));
    const high = Number((Math.floor(feature.max / step) * step).toFixed(decimals));
    const unit = feature.unit ? ` ${feature.unit}` : "";
    const span = `${rounded(feature.min, 6)} to ${rounded(feature.max, 6)}${unit}`;
    let note = `no range published`;
    if (feature.accepted === true) note = `accepted ${span}`;
    else if (feature.accepted === false) note = `seen in training ${span}`;
    const label = el("label", { for: `${id}-number`, id: `${id}-label` });
    label.textContent = readableName(feature.name);
    const slider = el("input", {
      type: "range",
      id: `${id}-range`,
      min: low,
      max: high,
      step,
      "aria-labelledby": `${id}-label`,
      "aria-describedby": `${id}-note`,
    });
    const number = el("input", {
      type: "number",
      id: `${id}-number`,
      step: "any",
      inputmode: "decimal",
      "aria-describedby": `${id}-note`,
    });
    if (feature.accepted === true) {
      number.min = feature.min;
      number.max = feature.max;
    }
    const start = rounded(feature.start, 1);
    slider.value = start;
    number.value = start;
    slider.addEventListener("input", () => {
      number.value = slider.value;
      schedulePredict();
    });
    number.addEventListener("input", () => {
      if (number.value !== "") slider.value = number.value;
      schedulePredict();
    });
    form.append(
      el(
        "div",
        { class: "feature" },
        label,
        slider,
        el("span", { class: "value" }, number, el("span", { class: "unit", text: feature.unit })),
        el("small", { id: `${id}-note`, text: note }),
      ),
    );
  });
  const names = schema.features.map((feature) => feature.name);
  byId("presets").hidden = JSON.stringify(names) !== JSON.stringify(IRIS_FEATURES);
  byId("batch-columns").textContent = names.join(", ");
}

function buildPresets() {
  const group = byId("preset-buttons");
  for (const preset of PRESETS) {
    const button = el("button", {
      type: "button",
      text: `${preset.label} (${preset.values.map((value) => value.toFixed(1)).join(", ")})`,
    });
    button.addEventListener("click", () => {
      setInputs(preset.values);
      predictNow();
    });
    group.append(button);
  }
}

function setInputs(values) {
  values.forEach((value, index) => {
    byId(`feature-${index}-number`).value = String(value);
    byId(`feature-${index}-range`).value = String(value);
  });
}

function readInputs() {
  return state.schema.features.map((_, index) => {
    const text = byId(`feature-${index}-number`).value;
    return text === "" ? null : Number(text);
  });
}

function schedulePredict() {
  clearTimeout(state.predictTimer);
  state.predictTimer = setTimeout(predictNow, PREDICT_DELAY_MS);
}

async function predictNow() {
  clearTimeout(state.predictTimer);
  if (!state.schema) return;
  const seq = ++state.predictSeq;
  const prediction = byId("prediction");
  prediction.setAttribute("aria-busy", "true");
  let answer = null;
  let failure = null;
  try {
    answer = await predict([readInputs()]);
    if (answer.status !== 200) failure = serverMessage(answer);
  } catch (error) {
    if (!(error instanceof Unreachable)) throw error;
    failure = "The server cannot be reached.";
  }
  if (seq !== state.predictSeq) return;
  prediction.removeAttribute("aria-busy");
  const errorLine = byId("prediction-error");
  errorLine.hidden = failure === null;
  errorLine.textContent = failure || "";
  if (failure === null) {
    renderPrediction(answer.body.predictions[0]);
  } else {
    prediction.dataset.state = "error";
    byId("predicted-label").textContent = "";
    byId("predicted-confidence").textContent = "";
    byId("class-bars").replaceChildren();
  }
}

function classesOf(probabilities) {
  const known = state.schema.classes;
  const given = Object.keys(probabilities);
  return known.length && given.every((name) => known.includes(name)) ? known : given;
}

function renderPrediction(row) {
  const label = String(row.label ?? row.class_id);
  const probabilities = row.probabilities || {};
  const prediction = byId("prediction");
  prediction.dataset.state = "ok";
  byId("predicted-label").textContent = label;
  byId("predicted-confidence").textContent = `${percent(Number(row.confidence))} confident`;
  const bars = classesOf(probabilities).map((name, index) => {
    const probability = Number(probabilities[name] ?? 0);
    const id = `bar-${index}`;
    return el(
      "li",
      { class: name === label ? "bar predicted" : "bar" },
      el("span", { class: "bar-name", id, text: name }),
      el("meter", { min: "0", max: "1", value: String(probability), "aria-labelledby": id }),
      el("span", { class: "bar-value", text: percent(probability) }),
    );
  });
  byId("class-bars").replaceChildren(...bars);
}

function formatTime(text) {
  const moment = new Date(text);
  if (Number.isNaN(moment.getTime())) return String(text);
  return `${moment.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

function renderCard(meta) {
  const metrics = meta.metrics || {};
  const facts = [
    ["version", "Version", meta.version],
    ["trained", "Trained", formatTime(meta.created_at)],
    ["algorithm", "Algorithm", meta.algorithm],
    ["accuracy", "Held-out accuracy", percent(Number(metrics.accuracy))],
    ["f1", "Held-out F1 (macro)", percent(Number(metrics.f1_macro))],
    ["rows", "Rows trained on / held out", `${metrics.train_rows} / ${metrics.test_rows}`],
    ["sklearn", "scikit-learn", meta.sklearn_version],
  ];
  byId("card-facts").replaceChildren(
    ...facts.flatMap(([key, term, value]) => [
      el("dt", { text: term }),
      el("dd", { "data-fact": key, text: String(value ?? "") }),
    ]),
  );
  byId("hyperparameters").replaceChildren(
    ...Object.entries(meta.hyperparameters || {}).flatMap(([name, value]) => [
      el("dt", { text: name }),
      el("dd", { text: String(value) }),
    ]),
  );
  renderConfusion(state.schema.classes, metrics.confusion_matrix || []);
}

// Each cell is shaded by its share of its row (the true class), in six steps.
function renderConfusion(classes, matrix) {
  const table = byId("confusion");
  const head = el("tr", {}, el("td"));
  for (const name of classes) head.append(el("th", { scope: "col", text: `predicted ${name}` }));
  table.tHead.replaceChildren(head);
  const rows = matrix.map((counts, index) => {
    const total = counts.reduce((sum, count) => sum + Number(count), 0);
    const row = el("tr", {}, el("th", { scope: "row", text: `true ${classes[index] ?? index}` }));
    for (const count of counts) {
      const share = total > 0 ? Number(count) / total : 0;
      row.append(el("td", { class: `heat-${Math.min(5, Math.floor(share * 6))}`, text: String(count) }));
    }
    return row;
  });
  table.tBodies[0].replaceChildren(...rows);
}

function showModel(meta) {
  const schema = readSchema(meta);
  const inputsChanged = !state.schema || !sameFeatures(state.schema, schema);
  state.schema = schema;
  if (inputsChanged) buildInputs(schema);
  const wasReady = state.ready;
  state.ready = true;
  byId("content").hidden = false;
  if (meta.version !== state.version || inputsChanged) {
    state.version = meta.version;
    renderCard(meta);
    predictNow();
  } else if (!wasReady) {
    predictNow();
  }
  setStatus("ready", `Serving ${state.model} version ${meta.version}.`);
}

async function findModel() {
  const answer = await call("../v1/models");
  const models = answer.body && answer.body.models;
  return Array.isArray(models) && models.length ? String(models[0]) : null;
}

async function refresh() {
  const every = `trying again every ${POLL_MS / 1000} s`;
  try {
    if (!state.model) state.model = await findModel();
    if (!state.model) {
      setStatus("not-ready", `The server has no model yet; ${every}.`);
      return;
    }
    byId("model-name").textContent = state.model;
    const answer = await call(modelPath("/metadata"));
    if (answer.status === 200 && answer.body) {
      showModel(answer.body);
      return;
    }
    state.ready = false;
    if (answer.status === 503) {
      setStatus("not-ready", `No model is loaded yet; ${every}. The server says: ${serverMessage(answer)}`);
    } else {
      setStatus("error", `The metadata could not be read; ${every}. The server says: ${serverMessage(answer)}`);
    }
  } catch (error) {
    if (!(error instanceof Unreachable)) throw error;
    state.ready = false;
    setStatus("unreachable", `The server cannot be reached; ${every}.`);
  } finally {
    setTimeout(refresh, POLL_MS);
  }
}

// A small RFC 4180 reader: commas, double quotes, CRLF or LF.
function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const char = text[i];
    if (quoted) {
      if (char === '"' && text[i + 1] === '"') {
        cell += '"';
        i += 1;
      } else if (char === '"') {
        quoted = false;
      } else {
        cell += char;
      }
    } else if (char === '"') {
      quoted = true;
    } else if (char === ",") {
      row.push(cell);
      cell = "";
    } else if (char === "\n" || char === "\r") {
      if (char === "\r" && text[i + 1] === "\n") i += 1;
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
    } else {
      cell += char;
    }
  }
  if (cell !== "" || row.length) {
    row.push(cell);
    rows.push(row);
  }
  return rows.filter((cells) => cells.some((value) => value.trim() !== ""));
}

function csvField(value) {
  return /[",\r\n]|^\s|\s$/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

// A cell as the server should see it: a number, null when empty, else the text,
// so the server's own validation names what is wrong with it.
function cellValue(text) {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  return NUMBER.test(trimmed) ? Number(trimmed) : trimmed;
}

function readBatch(text) {
  const rows = parseCsv(text);
  const names = state.schema.features.map((feature) => feature.name);
  let columns = null;
  let first = 0;
  if (rows.length && rows[0].every((cell) => !NUMBER.test(cell.trim()))) {
    first = 1;
    const header = rows[0].map((cell) => cell.trim().toLowerCase());
    const found = names.map((name) => header.indexOf(name.toLowerCase()));
    if (found.every((index) => index >= 0)) columns = found;
  }
  return rows.slice(first).map((cells, index) => ({
    line: index + first + 1,
    cells: columns ? columns.map((column) => cells[column] ?? "") : cells,
  }));
}

async function predictRows(rows, results, offset) {
  const instances = rows.map((row) => row.cells.map(cellValue));
  let answer;
  try {
    answer = await predict(instances);
  } catch (error) {
    if (!(error instanceof Unreachable)) throw error;
    rows.forEach((_, index) => {
      results[offset + index] = { error: "The server cannot be reached." };
    });
    return;
  }
  if (answer.status === 200) {
    answer.body.predictions.forEach((prediction, index) => {
      results[offset + index] = { prediction };
    });
  } else if (answer.status === 400 && rows.length > 1) {
    // The server refuses a whole request for one bad row: ask row by row, so each
    // refused row gets the server's own message.
    let next = 0;
    const worker = async () => {
      while (next < rows.length) {
        const index = next;
        next += 1;
        await predictRows([rows[index]], results, offset + index);
      }
    };
    await Promise.all(Array.from({ length: ROW_RETRY_CONCURRENCY }, worker));
  } else {
    const message = serverMessage(answer);
    rows.forEach((_, index) => {
      results[offset + index] = { error: message };
    });
  }
}

function batchTable(rows, results) {
  const names = state.schema.features.map((feature) => feature.name);
  const classes = state.schema.classes;
  const header = ["line", ...names, "class", "confidence", ...classes.map((name) => `p(${name})`), "error"];
  const body = rows.map((row, index) => {
    const result = results[index];
    const inputs = names.map((_, column) => (row.cells[column] ?? "").trim());
    if (!result.prediction) {
      return [String(row.line), ...inputs, "", "", ...classes.map(() => ""), result.error];
    }
    const { prediction } = result;
    const probabilities = prediction.probabilities || {};
    return [
      String(row.line),
      ...inputs,
      String(prediction.label ?? prediction.class_id),
      rounded(Number(prediction.confidence), 6),
      ...classes.map((name) => rounded(Number(probabilities[name] ?? 0), 6)),
      "",
    ];
  });
  return { header, body };
}

// A refused row's message spans the columns its prediction would have filled.
function renderBatch(table) {
  const element = byId("batch-table");
  const errorColumn = table.header.length - 1;
  const answerColumn = 1 + state.schema.features.length;
  element.tHead.replaceChildren(
    el("tr", {}, ...table.header.map((name) => el("th", { scope: "col", text: name }))),
  );
  const rows = table.body.map((cells) => {
    const error = cells[errorColumn];
    if (!error) return el("tr", {}, ...cells.map((cell) => el("td", { text: cell })));
    return el(
      "tr",
      { class: "refused" },
      ...cells.slice(0, answerColumn).map((cell) => el("td", { text: cell })),
      el("td", { class: "error", colspan: String(cells.length - answerColumn), text: error }),
    );
  });
  element.tBodies[0].replaceChildren(...rows);
  element.hidden = false;
}

async function runBatch() {
  if (!state.schema) return;
  const summary = byId("batch-summary");
  const rows = readBatch(byId("batch-text").value);
  if (!rows.length) {
    summary.textContent = "No rows to predict.";
    return;
  }
  summary.textContent = `Predicting ${rows.length} rows…`;
  byId("batch-run").disabled = true;
  try {
    const results = new Array(rows.length);
    for (let offset = 0; offset < rows.length; offset += BATCH_CHUNK_ROWS) {
      await predictRows(rows.slice(offset, offset + BATCH_CHUNK_ROWS), results, offset);
    }
    state.batchTable = batchTable(rows, results);
    renderBatch(state.batchTable);
    const refused = results.filter((result) => !result.prediction).length;
    summary.textContent = `${rows.length} rows: ${rows.length - refused} predicted, ${refused} refused.`;
    byId("batch-download").disabled = false;
  } finally {
    byId("batch-run").disabled = false;
  }
}

function downloadBatch() {
  const table = state.batchTable;
  const lines = [table.header, ...table.body].map((cells) => cells.map(csvField).join(","));
  const blob = new Blob([`${lines.join("\r\n")}\r\n`], { type: "text/csv" });
  const link = el("a", { href: URL.createObjectURL(blob), download: "predictions.csv" });
  link.click();
  // Released once the browser has surely started the download.
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

function start() {
  buildPresets();
  byId("batch-run").addEventListener("click", runBatch);
  byId("batch-download").addEventListener("click", downloadBatch);
  byId("batch-file").addEventListener("change", async (event) => {
    const [file] = event.target.files;
    if (!file) return;
    byId("batch-text").value = await file.text();
    await runBatch();
  });
  byId("features").addEventListener("submit", (event) => event.preventDefault());
  refresh();
}

start();
