// The echoprime study viewer: upload a study (or a synthetic example), show each video's first
// frame with its view, the report section by section (the videos that weighed most for the
// selected section are highlighted) and the findings: decisions, calibrated probabilities,
// severity grades (marked where the report text states another) and measurement intervals.
// Plain DOM, no build.
"use strict";

const $ = (sel) => document.querySelector(sel);
const KEY_STORE = "echoprime-api-key";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function status(text, isError = false) {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", isError);
}

function apiKey() {
  return $("#api-key").value.trim() || sessionStorage.getItem(KEY_STORE) || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const reason = body && body.reason ? body.reason : resp.statusText;
    throw new Error(`${resp.status} ${body && body.code ? body.code : "error"}: ${reason}`);
  }
  return body;
}

function fmt(x, digits = 2) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function present(x) {
  return x !== null && x !== undefined && Number.isFinite(Number(x));
}

// A measurement with its interval, "35.0 % (30.0-41.0)"; a binary's positive share as before.
function valueText(m) {
  if (!present(m.value)) return "–";
  const unit = m.unit ? " " + m.unit : "";
  if (m.kind !== "regression") return `${fmt(m.value)}${unit}`;
  const iv = m.interval || null;
  const span = iv && present(iv.low) && present(iv.high) ? ` (${fmt(iv.low, 1)}-${fmt(iv.high, 1)})` : "";
  return `${fmt(m.value, 1)}${unit}${span}`;
}

function calibratedCell(m) {
  const td = el("td", { class: "calibrated" }, fmt(m.calibrated_probability));
  if (present(m.calibrated_probability)) {
    td.title = `calibrated (${m.calibration || "unknown method"}) on the validation split; raw vote share ${fmt(m.probability)}`;
  }
  return td;
}

// The grade's name, a small bar of the neighbours' vote per grade, and a mark where the report
// text states another grade (the text is the retrieved text and stays as it is).
function gradeCell(g) {
  const td = el("td", { class: "grade" });
  if (!g) { td.append("–"); return td; }
  td.append(el("span", { class: "grade-label" }, g.label === null || g.label === undefined ? "ungraded" : g.label));
  const scale = g.scale || [];
  const dist = g.distribution || [];
  if (scale.length && dist.length === scale.length && dist.every(present)) {
    const shares = scale.map((s, i) => `${s} ${Math.round(100 * dist[i])} %`).join(", ");
    const bar = el("span", { class: "grade-dist", role: "img", "aria-label": `neighbours' grades: ${shares}` });
    bar.title = `neighbours' grades (${g.n_graded} graded): ${shares}`;
    scale.forEach((s, i) => {
      const part = el("span", { class: `grade-share${i === g.grade ? " predicted" : ""}${i >= g.positive_from ? " positive" : ""}` });
      part.style.width = `${Math.max(0, Math.min(100, 100 * dist[i]))}%`;
      bar.append(part);
    });
    td.append(bar);
  }
  if (g.agrees_with_report === false) {
    const mark = el("span", { class: "disagree" }, "≠ report");
    mark.title = `The report text states ${g.report_label || "no grade"}; the graded finding is ${g.label || "ungraded"}. The report text is shown as retrieved.`;
    td.append(mark);
  }
  return td;
}

async function loadModel() {
  try {
    const m = await api("/v1/model");
    const v = m.versions || {};
    const b = m.bundle || {};
    $("#model-info").textContent =
      `bundle ${b.name} (${(b.sha256 || "").slice(0, 12)}) · created ${m.created} · echoprime ${v.echoprime || "?"} · ` +
      `${(m.label_sets && m.label_sets.views || []).length} views, ` +
      `${(m.label_sets && m.label_sets.phenotypes || []).length} phenotypes`;
  } catch (e) {
    $("#model-info").textContent = `model: ${e.message}`;
  }
}

function selectSection(result, section) {
  document.querySelectorAll("#report li").forEach((li) => li.classList.toggle("selected", li.dataset.section === section));
  const ev = (result.evidence || {})[section] || [];
  const top = ev.length ? ev[0].weight : null;
  const weights = new Map(ev.map((e) => [e.video, e.weight]));
  document.querySelectorAll("#videos .video").forEach((card) => {
    const j = Number(card.dataset.index);
    const w = weights.has(j) ? weights.get(j) : null;
    card.classList.toggle("top", w !== null && top !== null && w >= top);
    card.querySelector(".bar div").style.width = w === null ? "0%" : `${Math.round(100 * w / (top || 1))}%`;
    card.querySelector(".weight").textContent = w === null ? "" : `weight ${fmt(w, 3)} for ${section}`;
  });
}

function render(result, example) {
  $("#result").hidden = false;
  const videos = $("#videos");
  videos.replaceChildren();
  (result.videos || []).forEach((v, j) => {
    const img = el("img", { alt: `first frame of ${v.file}`, src: (result.previews || [])[j] || "" });
    videos.append(el("div", { class: "video", dataset: { index: j, view: v.view } },
      img,
      el("div", { class: "view" }, v.view),
      el("div", { class: "muted" }, `confidence ${fmt(v.confidence)}`),
      el("div", { class: "name" }, v.file),
      el("div", { class: "bar" }, el("div")),
      el("div", { class: "weight muted" })));
  });

  const report = $("#report");
  report.replaceChildren();
  for (const s of result.report || []) {
    const ev = ((result.evidence || {})[s.section] || []).slice(0, 2);
    const li = el("li", { dataset: { section: s.section } },
      el("div", { class: "section-text" }, s.text),
      el("div", { class: "evidence" },
        ev.length ? `most weight: ${ev.map((e) => `${e.file} (${fmt(e.weight, 3)})`).join(", ")}` : "no per-video weights for this section",
        s.source_study ? ` · from ${s.source_study}` : ""));
    li.addEventListener("click", () => selectSection(result, s.section));
    report.append(li);
  }

  const tbody = $("#metrics tbody");
  tbody.replaceChildren();
  for (const [name, m] of Object.entries(result.metrics || {})) {
    const decision = m.decision === null || m.decision === undefined ? "–" : (m.decision ? "yes" : "no");
    const cls = decision === "yes" ? "decision-yes" : decision === "no" ? "decision-no" : "";
    const g = m.grade || null;
    tbody.append(el("tr", { dataset: { phenotype: name, agrees: g && g.agrees_with_report === false ? "no" : "" } },
      el("td", {}, name),
      el("td", { class: "value" }, valueText(m)),
      el("td", { class: "probability" }, fmt(m.probability)),
      calibratedCell(m),
      el("td", {}, fmt(m.threshold)),
      el("td", { class: `decision ${cls}` }, decision),
      gradeCell(g),
      el("td", {}, fmt(m.spread)),
      el("td", {}, m.n_labelled)));
  }

  const files = $("#files-table tbody");
  files.replaceChildren();
  for (const f of result.files || []) {
    files.append(el("tr", { class: f.status },
      el("td", {}, f.path), el("td", {}, f.status), el("td", {}, f.reason || ""), el("td", {}, f.n_frames)));
  }

  $("#truth-panel").hidden = !example;
  $("#truth").textContent = example ? example.report : "";
  if ((result.report || []).length) selectSection(result, result.report[0].section);
}

async function interpret(files, example = null) {
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const buttons = document.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  status(`Interpreting ${files.length} file(s)…`);
  try {
    const t0 = performance.now();
    const result = await api("/v1/interpret?previews=true", { method: "POST", body: form });
    render(result, example);
    const used = (result.files || []).filter((f) => f.status === "used").length;
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    status(result.status === "ok"
      ? `Interpreted ${used} of ${result.files.length} file(s) in ${secs} s.`
      : `No usable video in the study (${result.status}).`, result.status !== "ok");
    document.body.dataset.state = "done";
  } catch (e) {
    status(e.message, true);
    document.body.dataset.state = "error";
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function b64ToFile(f) {
  const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
  return new File([bytes], f.name, { type: f.media_type });
}

$("#save-key").addEventListener("click", () => {
  sessionStorage.setItem(KEY_STORE, $("#api-key").value.trim());
  loadModel();
});
$("#interpret").addEventListener("click", () => {
  const files = Array.from($("#files").files || []);
  if (!files.length) { status("Choose the study's files first.", true); return; }
  interpret(files);
});
$("#example").addEventListener("click", async () => {
  const index = Number($("#example-index").value || 0);
  status(`Making synthetic example ${index}…`);
  try {
    const ex = await api(`/v1/examples/${index}`);
    await interpret(ex.files.map(b64ToFile), ex);
  } catch (e) {
    status(e.message, true);
  }
});
if (sessionStorage.getItem(KEY_STORE)) {
  $("#api-key").value = sessionStorage.getItem(KEY_STORE);
  loadModel();
}
