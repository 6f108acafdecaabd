// The echoprime study viewer: upload a study (or a synthetic example) and read its
// interpretation. Each clip plays as a loop of the frames the model saw (a filmstrip image the
// server makes, drawn frame by frame on a canvas: pause, step, play all in step); the attention
// is a section x video heat strip; the report is shown section by section without its internal
// separators; findings are probability bars with their threshold and measurements on a scale
// with the normal range; a synthetic example's truth stands beside each section and finding.
// Plain DOM, no build, nothing inline (the server's Content-Security-Policy allows only this
// file and viewer.css; styles are set through the CSSOM, which the policy permits).
"use strict";

const $ = (sel) => document.querySelector(sel);
const KEY_STORE = "echoprime-api-key"; // sessionStorage only: gone when the tab closes
// Past the server's own request_timeout_s (120 s), which answers 408 first; a test may shorten
// it for the tab (sessionStorage "echoprime-client-timeout-ms").
const clientTimeoutMs = () => Number(sessionStorage.getItem("echoprime-client-timeout-ms")) || 150000;
const DEFAULT_FPS = 10; // a loop whose file has no frame rate plays at this, and says so

// The report section of each finding (echoprime.taxonomy.FINDING_BY_NAME; a unit test keeps
// the two equal). A finding the viewer does not know is listed under "Other findings".
const FINDING_SECTION = {
  impella: "Left Ventricle",
  ejection_fraction: "Left Ventricle",
  heart_rate: "Resting Segmental Wall Motion Analysis",
  pacemaker: "Right Ventricle",
  rv_systolic_function_depressed: "Right Ventricle",
  right_ventricle_dilation: "Right Ventricle",
  left_atrium_dilation: "Left Atrium",
  right_atrium_dilation: "Right Atrium",
  mitraclip: "Mitral Valve",
  mitral_annular_calcification: "Mitral Valve",
  mitral_stenosis: "Mitral Valve",
  mitral_regurgitation: "Mitral Valve",
  tavr: "Aortic Valve",
  bicuspid_aov_morphology: "Aortic Valve",
  aortic_stenosis: "Aortic Valve",
  aortic_regurgitation: "Aortic Valve",
  tricuspid_stenosis: "Tricuspid Valve",
  tricuspid_valve_regurgitation: "Tricuspid Valve",
  pericardial_effusion: "Pericardium",
  aortic_root_dilation: "Aorta",
  dilated_ivc: "IVC",
  pulmonary_artery_pressure_continuous: "Pulmonary Artery",
};
const SECTION_ORDER = [
  "Left Ventricle", "Resting Segmental Wall Motion Analysis", "Right Ventricle", "Left Atrium",
  "Right Atrium", "Atrial Septum", "Mitral Valve", "Aortic Valve", "Tricuspid Valve", "Pulmonic Valve",
  "Pericardium", "Aorta", "IVC", "Pulmonary Artery", "Pulmonary Veins", "Postoperative Findings",
];
// Measurement scales: the axis drawn and the adult normal range shaded (general clinical
// conventions, sources in docs/viewer.md).
const SCALES = {
  ejection_fraction: { min: 0, max: 100, normal: [52, 72], label: "normal 52-72 %" },
  pulmonary_artery_pressure_continuous: { min: 0, max: 100, normal: [0, 35], label: "normal < 35 mmHg" },
  heart_rate: { min: 30, max: 150, normal: [60, 100], label: "normal 60-100 bpm" },
};
const PSEUDONYM = /^p-[0-9a-f]{8,64}$/;

const state = { result: null, example: null, section: null, current: 0, loops: [], raf: 0, playing: true };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// ------------------------------------------------------------------ messages and progress
function status(text, kind = "") {
  const s = $("#status");
  s.textContent = text;
  s.classList.toggle("error", kind !== "" && kind !== "ok");
  s.dataset.kind = kind;
}

function progress(text, fraction = null) {
  const box = $("#progress");
  if (text === null) { box.hidden = true; return; }
  box.hidden = false;
  $("#progress-text").textContent = text;
  const bar = $("#progress-bar");
  if (fraction === null) bar.removeAttribute("value"); // indeterminate: the server is working
  else bar.value = Math.max(0, Math.min(1, fraction));
}

// An error a reader can act on, from the HTTP status and the server's {code, reason}.
class ApiFailure extends Error {
  constructor(kind, message) { super(message); this.kind = kind; }
}

function failure(status, body) {
  const code = body && body.code ? body.code : `http_${status}`;
  const reason = body && body.reason ? body.reason : "";
  if (status === 401) {
    return new ApiFailure("auth", `The server refused the API key (401 ${code}). Enter the key the server was started with and press "Use key".`);
  }
  if (status === 408) {
    return new ApiFailure("timeout", `The server stopped after its time limit (408 ${code}): ${reason} Try fewer files, or ask the operator to raise request_timeout_s.`);
  }
  if (status === 413) return new ApiFailure("input", `The study is too large for this server (413 ${code}): ${reason}`);
  if (status === 503) {
    return new ApiFailure("busy", `The server is busy or restarting (503 ${code}): ${reason} Try again in a few seconds.`);
  }
  if (status >= 500) {
    return new ApiFailure("server", `The server failed on this request (${status} ${code}): ${reason} Try again; if it fails again, give the operator the incident id.`);
  }
  return new ApiFailure("input", `The server did not accept the request (${status} ${code}): ${reason}`);
}

function apiKey() {
  return $("#api-key").value.trim() || sessionStorage.getItem(KEY_STORE) || "";
}

// One API call through XMLHttpRequest (fetch reports no upload progress). Resolves with the
// parsed JSON and the time its last byte arrived.
function request(method, path, body = null, onUpload = null) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, path);
    xhr.timeout = clientTimeoutMs();
    const key = apiKey();
    if (key) xhr.setRequestHeader("X-API-Key", key);
    if (onUpload) {
      xhr.upload.onprogress = (e) => onUpload(e.loaded, e.lengthComputable ? e.total : null, false);
      xhr.upload.onload = () => onUpload(1, 1, true);
    }
    xhr.onload = () => {
      const arrived = performance.now();
      let parsed = null;
      try { parsed = JSON.parse(xhr.responseText); } catch (e) { parsed = null; }
      if (xhr.status >= 200 && xhr.status < 300 && parsed !== null) resolve({ body: parsed, arrived });
      else if (xhr.status >= 200 && xhr.status < 300) reject(new ApiFailure("server", "The server's answer was not JSON."));
      else reject(failure(xhr.status, parsed));
    };
    xhr.ontimeout = () => reject(new ApiFailure("timeout", `No answer from the server within ${xhr.timeout / 1000} s; the request was abandoned. Try again, or with fewer files.`));
    xhr.onerror = () => reject(new ApiFailure("network", "Could not reach the server (network error). Check that it is running and reachable."));
    xhr.send(body);
  });
}

// ------------------------------------------------------------------ formatting
function fmt(x, digits = 2) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function present(x) {
  return x !== null && x !== undefined && Number.isFinite(Number(x));
}

function baseName(path) {
  return String(path || "").split(/[\\/]/).pop();
}

// A section's text as a reader wants it: without the "[SEP]" separators and without its own
// "Section:" header (the section's name is shown above it).
function cleanText(section, text) {
  let t = String(text || "").replace(/\[SEP\]/g, " ").replace(/\s+/g, " ").trim();
  if (section && t.toLowerCase().startsWith(section.toLowerCase() + ":")) t = t.slice(section.length + 1).trim();
  return t;
}

// A measurement with its interval, "35.0 % (30.0-41.0)"; a binary's vote share.
function valueText(m) {
  if (!present(m.value)) return "–";
  const unit = m.unit ? " " + m.unit : "";
  if (m.kind !== "regression") return `${fmt(m.value)}${unit}`;
  const iv = m.interval || null;
  const span = iv && present(iv.low) && present(iv.high) ? ` (${fmt(iv.low, 1)}-${fmt(iv.high, 1)})` : "";
  return `${fmt(m.value, 1)}${unit}${span}`;
}

function pct(x, lo, hi) {
  return `${Math.max(0, Math.min(100, (100 * (x - lo)) / (hi - lo)))}%`;
}

// ------------------------------------------------------------------ findings
function probabilityBar(m) {
  const bar = el("span", { class: "pbar", role: "img" });
  const fill = el("span", { class: `pfill${m.decision ? " positive" : ""}` });
  fill.style.width = pct(Number(m.probability), 0, 1);
  bar.append(fill);
  const parts = [`vote share ${fmt(m.probability)}`];
  if (present(m.threshold)) {
    const thr = el("span", { class: "pthr" });
    thr.style.left = pct(Number(m.threshold), 0, 1);
    bar.append(thr);
    parts.push(`threshold ${fmt(m.threshold)} (${m.threshold_source || "unknown source"})`);
  }
  if (present(m.calibrated_probability)) {
    const cal = el("span", { class: "pcal" });
    cal.style.left = pct(Number(m.calibrated_probability), 0, 1);
    bar.append(cal);
    parts.push(`calibrated ${fmt(m.calibrated_probability)}`);
  }
  if (present(m.n_labelled)) parts.push(`from k ${m.n_labelled} labelled neighbours, spread ${fmt(m.spread)}`);
  bar.setAttribute("aria-label", parts.join(", "));
  bar.title = parts.join("; ");
  return bar;
}

function measurementScale(name, m, truth) {
  const sc = SCALES[name];
  const iv = m.interval || null;
  const lo = sc ? sc.min : Math.min(0, Number(m.value));
  const hi = sc ? sc.max : Math.max(1, 2 * Number(m.value), iv && present(iv.high) ? Number(iv.high) : 0);
  const box = el("span", { class: "scale", role: "img" });
  const parts = [`${fmt(m.value, 1)} ${m.unit || ""}`.trim()];
  if (sc) {
    const normal = el("span", { class: "normal" });
    normal.style.left = pct(sc.normal[0], lo, hi);
    normal.style.width = `calc(${pct(sc.normal[1], lo, hi)} - ${pct(sc.normal[0], lo, hi)})`;
    box.append(normal);
    parts.push(sc.label);
  }
  if (iv && present(iv.low) && present(iv.high)) {
    const band = el("span", { class: "band" });
    band.style.left = pct(Number(iv.low), lo, hi);
    band.style.width = `calc(${pct(Number(iv.high), lo, hi)} - ${pct(Number(iv.low), lo, hi)})`;
    box.append(band);
    parts.push(`${Math.round(100 * (iv.level || 0.8))} % interval ${fmt(iv.low, 1)}-${fmt(iv.high, 1)}`);
  }
  const mark = el("span", { class: "mark" });
  mark.style.left = pct(Number(m.value), lo, hi);
  box.append(mark);
  if (truth && present(truth.value)) {
    const t = el("span", { class: "truth-mark" });
    t.style.left = pct(Number(truth.value), lo, hi);
    box.append(t);
    parts.push(`truth ${fmt(truth.value, 1)}`);
  }
  box.setAttribute("aria-label", parts.join(", "));
  box.title = parts.join("; ");
  return box;
}

function estimateCell(name, m, truth) {
  if (m.kind === "regression") {
    const td = el("td", { class: "value estimate" }, el("span", { class: "vtext" }, valueText(m)));
    if (present(m.value)) td.prepend(measurementScale(name, m, truth));
    return td;
  }
  const td = el("td", { class: "value probability estimate" });
  if (present(m.probability)) td.append(probabilityBar(m));
  td.append(el("span", { class: "vtext" }, valueText(m)));
  return td;
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

// Whether a finding agrees with a synthetic study's truth: a binary's decision against the
// stated finding, a measurement's truth inside its interval (within one spread without one).
// null: nothing to compare.
function agreement(m, t) {
  if (!t || !present(t.value)) return null;
  if (m.kind === "regression") {
    if (!present(m.value)) return null;
    const iv = m.interval;
    if (iv && present(iv.low) && present(iv.high)) return t.value >= iv.low && t.value <= iv.high;
    return present(m.spread) ? Math.abs(t.value - m.value) <= m.spread : null;
  }
  if (m.decision === null || m.decision === undefined) return null;
  return Boolean(m.decision) === t.value >= 0.5;
}

function truthCell(m, t) {
  const td = el("td", { class: "truth truth-col" });
  if (!t || !present(t.value)) { td.append("–"); return td; }
  const unit = m.unit ? " " + m.unit : "";
  let text = m.kind === "regression" ? `${fmt(t.value, 1)}${unit}` : (t.value >= 0.5 ? "yes" : "no");
  if (t.label) text += ` · ${t.label}`;
  td.append(el("span", { class: "truth-value" }, text));
  const ok = agreement(m, t);
  if (ok !== null) td.append(el("span", { class: ok ? "agree yes" : "agree no", title: ok ? "agrees with the truth" : "differs from the truth" }, ok ? " ✓" : " ✗"));
  return td;
}

function renderFindings(result, truth) {
  const tbody = $("#metrics tbody");
  tbody.replaceChildren();
  const groups = new Map();
  for (const [name, m] of Object.entries(result.metrics || {})) {
    const section = FINDING_SECTION[name] || "Other findings";
    if (!groups.has(section)) groups.set(section, []);
    groups.get(section).push([name, m]);
  }
  const order = [...groups.keys()].sort((a, b) => rank(a) - rank(b));
  for (const section of order) {
    tbody.append(el("tr", { class: "group", dataset: { group: section } }, el("th", { colspan: "8" }, section)));
    for (const [name, m] of groups.get(section)) {
      const decision = m.decision === null || m.decision === undefined ? "–" : (m.decision ? "yes" : "no");
      const cls = decision === "yes" ? "decision-yes" : decision === "no" ? "decision-no" : "";
      const g = m.grade || null;
      const t = truth ? (truth.findings || {})[name] : null;
      const ok = truth ? agreement(m, t) : null;
      const thr = el("td", { class: "threshold" }, fmt(m.threshold));
      if (m.threshold_source) thr.title = `threshold from ${m.threshold_source}`;
      tbody.append(el("tr", {
        dataset: {
          phenotype: name, section, kind: m.kind || "",
          agrees: g && g.agrees_with_report === false ? "no" : "",
          truth: ok === null ? "" : ok ? "agree" : "differ",
        },
      },
      el("td", { class: "name" }, name.replace(/_/g, " ")),
      estimateCell(name, m, t),
      calibratedCell(m),
      thr,
      el("td", { class: `decision ${cls}` }, decision),
      gradeCell(g),
      el("td", { class: "source", title: "labelled neighbours that voted (k) and the spread of their values" },
        present(m.n_labelled) ? `k ${m.n_labelled} · spread ${fmt(m.spread)}` : "–"),
      truthCell(m, t)));
    }
  }
}

function rank(section) {
  const i = SECTION_ORDER.indexOf(section);
  return i < 0 ? SECTION_ORDER.length : i;
}

// Whether a report section agrees with the truth: every finding of it that can be compared.
function sectionAgreement(result, truth, section) {
  let seen = 0;
  for (const [name, m] of Object.entries(result.metrics || {})) {
    if (FINDING_SECTION[name] !== section) continue;
    const ok = agreement(m, (truth.findings || {})[name]);
    if (ok === null) continue;
    seen += 1;
    if (!ok) return false;
  }
  return seen ? true : null;
}

// ------------------------------------------------------------------ loops
function makeLoop(j, spec, card) {
  const canvas = card.querySelector("canvas");
  const loop = {
    j, canvas, ctx: canvas.getContext("2d"), img: card.querySelector("img.strip"),
    frames: spec ? spec.frames : 1, columns: spec ? spec.columns : 1, size: spec ? spec.size : 0,
    fps: spec && present(spec.fps) ? spec.fps : DEFAULT_FPS, knownFps: Boolean(spec && present(spec.fps)),
    base: 0, t0: performance.now(), paused: false, shown: -1, ready: false,
  };
  return loop;
}

function frameOf(loop, now) {
  if (loop.paused || loop.frames <= 1) return loop.base;
  return (loop.base + Math.floor(((now - loop.t0) / 1000) * loop.fps)) % loop.frames;
}

function draw(loop, frame) {
  if (!loop.ready) return;
  const s = loop.size;
  const sx = (frame % loop.columns) * s;
  const sy = Math.floor(frame / loop.columns) * s;
  loop.ctx.drawImage(loop.img, sx, sy, s, s, 0, 0, s, s);
  loop.shown = frame;
  loop.canvas.dataset.frame = String(frame);
  const info = loop.canvas.parentElement.querySelector(".frame");
  if (info) info.textContent = frameText(loop, frame);
}

function frameText(loop, frame) {
  const rate = loop.knownFps ? `${fmt(loop.fps, 1)} fps` : `${DEFAULT_FPS} fps (file's rate unknown)`;
  return `frame ${frame + 1}/${loop.frames} · ${rate}${loop.paused ? " · paused" : ""}`;
}

function tick(now) {
  for (const loop of state.loops) {
    const f = frameOf(loop, now);
    if (f !== loop.shown) draw(loop, f);
  }
  state.raf = requestAnimationFrame(tick);
}

function setPaused(loop, paused) {
  const now = performance.now();
  loop.base = frameOf(loop, now);
  loop.t0 = now;
  loop.paused = paused;
  loop.canvas.closest(".video").classList.toggle("paused", paused);
  draw(loop, loop.base);
}

function step(loop, delta) {
  if (!loop.paused) setPaused(loop, true);
  loop.base = (loop.base + delta + loop.frames) % loop.frames;
  draw(loop, loop.base);
}

function playAll(play) {
  const now = performance.now();
  for (const loop of state.loops) {
    loop.paused = !play;
    if (play) { loop.base = 0; loop.t0 = now; } // every loop from its first frame, together
    loop.canvas.closest(".video").classList.toggle("paused", !play);
    draw(loop, frameOf(loop, now));
  }
  state.playing = play;
  $("#play-all").textContent = play ? "Pause all" : "Play all";
}

// ------------------------------------------------------------------ selection
function selectSection(section, focus = false) {
  const result = state.result;
  state.section = section;
  document.querySelectorAll("#report li").forEach((li) => {
    const on = li.dataset.section === section;
    li.classList.toggle("selected", on);
    li.tabIndex = on ? 0 : -1;
    li.setAttribute("aria-selected", on ? "true" : "false");
    if (on && focus) li.focus();
  });
  document.querySelectorAll("#heat tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.section === section));
  const ev = (result.evidence || {})[section] || [];
  const top = ev.length ? Math.max(...ev.map((e) => e.weight)) : null;
  const weights = new Map(ev.map((e) => [e.video, e.weight]));
  document.querySelectorAll("#videos .video").forEach((card) => {
    const j = Number(card.dataset.index);
    const w = weights.has(j) ? weights.get(j) : null;
    const rel = w === null || !top ? 0 : w / top;
    card.classList.toggle("top", w !== null && top !== null && w >= top);
    card.style.setProperty("--w", rel.toFixed(3));
    card.dataset.weight = w === null ? "" : String(w);
    card.querySelector(".bar div").style.width = `${Math.round(100 * rel)}%`;
    card.querySelector(".weight").textContent = w === null ? "" : `weight ${fmt(w, 3)} for ${section}`;
  });
}

function focusVideo(j) {
  const cards = [...document.querySelectorAll("#videos .video")];
  if (!cards.length) return;
  state.current = (j + cards.length) % cards.length;
  cards.forEach((c, i) => { c.tabIndex = i === state.current ? 0 : -1; c.classList.toggle("current", i === state.current); });
  cards[state.current].focus();
}

function moveSection(delta) {
  const items = [...document.querySelectorAll("#report li")];
  if (!items.length) return;
  const i = items.findIndex((li) => li.dataset.section === state.section);
  const next = items[(Math.max(0, i) + delta + items.length) % items.length];
  selectSection(next.dataset.section, true);
}

function onKey(e) {
  if (!state.result || e.altKey || e.ctrlKey || e.metaKey) return;
  const t = e.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.tagName === "BUTTON")) return;
  const loop = state.loops[state.current];
  const keys = {
    ArrowRight: () => focusVideo(state.current + 1),
    ArrowLeft: () => focusVideo(state.current - 1),
    ArrowDown: () => moveSection(1),
    ArrowUp: () => moveSection(-1),
    " ": () => loop && setPaused(loop, !loop.paused),
    ".": () => loop && step(loop, 1),
    ",": () => loop && step(loop, -1),
    p: () => playAll(!state.playing),
  };
  if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
}

// ------------------------------------------------------------------ rendering
function renderHeader(m) {
  const b = m.bundle || {};
  const v = m.versions || {};
  const name = baseName(b.name || "bundle"); // a name, never a path
  const sha = (b.sha256 || "").slice(0, 12);
  $("#model-info").replaceChildren(
    "bundle ", el("strong", {}, name),
    ` · version ${b.version || m.created || "?"} · sha256 ${sha || "?"} · echoprime ${v.echoprime || "?"} · `,
    `${(m.label_sets && m.label_sets.views || []).length} views, ${(m.label_sets && m.label_sets.phenotypes || []).length} phenotypes`);
  $("#model-info").title = `bundle content hash (sha256 of its manifest): ${b.sha256 || "unknown"}`;
}

async function loadModel() {
  try {
    const { body } = await request("GET", "/v1/model");
    renderHeader(body);
    return true;
  } catch (e) {
    $("#model-info").textContent = "Model unknown: the key was not accepted or the server did not answer.";
    status(e.message, e.kind || "server");
    return false;
  }
}

function renderVideos(result, example) {
  const videos = $("#videos");
  videos.replaceChildren();
  cancelAnimationFrame(state.raf);
  state.loops = [];
  const trueViews = new Map(((example && example.files) || []).filter((f) => f.view).map((f) => [f.name, f.view]));
  (result.videos || []).forEach((v, j) => {
    const spec = (result.loops || [])[j] || null;
    const still = (result.previews || [])[j] || null;
    const size = spec ? spec.size : 64;
    const canvas = el("canvas", { width: String(size), height: String(size), class: "loop", "aria-label": `clip ${j + 1}, ${v.view}; click to pause or play` });
    const img = el("img", { class: "strip", alt: "", hidden: "", src: spec ? spec.image : (still || "") });
    const name = baseName(v.file);
    const truthView = trueViews.get(name);
    const view = el("div", { class: "view" }, `${j + 1}. ${v.view} `, el("span", { class: "muted conf" }, fmt(v.confidence)));
    if (truthView) {
      const ok = truthView === v.view;
      view.append(el("span", { class: ok ? "agree yes" : "agree no", title: `true view ${truthView}` }, ok ? " ✓" : ` ✗ ${truthView}`));
    }
    const card = el("div", { class: "video", tabindex: j === 0 ? "0" : "-1", role: "group", "aria-label": `video ${j + 1}: ${v.view}`, dataset: { index: j, view: v.view } },
      canvas, img, view,
      el("div", { class: "frame muted" }),
      el("div", { class: "name", title: name }, name),
      el("div", { class: "bar" }, el("div")),
      el("div", { class: "weight muted" }));
    videos.append(card);
    const loop = makeLoop(j, spec, card);
    if (!spec && still) { loop.size = 0; } // a still: drawn whole once it has loaded
    state.loops.push(loop);
    canvas.addEventListener("click", () => { focusVideo(j); setPaused(loop, !loop.paused); });
    card.addEventListener("focus", () => { state.current = j; });
  });
}

async function startLoops() {
  await Promise.all(state.loops.map(async (loop) => {
    if (!loop.img.getAttribute("src")) return;
    try { await loop.img.decode(); } catch (e) { return; }
    if (!loop.size) { // a still first frame: the canvas takes its size
      loop.size = loop.img.naturalWidth; loop.columns = 1; loop.frames = 1;
      loop.canvas.width = loop.size; loop.canvas.height = loop.size;
    }
    loop.ctx.imageSmoothingEnabled = false;
    loop.ready = true;
  }));
  playAll(true);
  state.raf = requestAnimationFrame(tick);
}

function renderHeat(result) {
  const table = $("#heat");
  table.replaceChildren();
  const videos = result.videos || [];
  const head = el("tr", {}, el("th", { class: "corner" }, "section \\ video"));
  videos.forEach((v, j) => head.append(el("th", { class: "col", title: `${j + 1}. ${v.view} (${baseName(v.file)})` }, String(j + 1))));
  const body = el("tbody");
  const sections = Object.keys(result.evidence || {}).sort((a, b) => rank(a) - rank(b));
  for (const section of sections) {
    const ev = result.evidence[section] || [];
    const w = new Map(ev.map((e) => [e.video, e.weight]));
    const top = ev.length ? Math.max(...ev.map((e) => e.weight)) : 0;
    const tr = el("tr", { dataset: { section } }, el("th", { class: "row-name", title: section }, section));
    videos.forEach((v, j) => {
      const weight = w.has(j) ? w.get(j) : null;
      const cell = el("td", { class: "cell", title: `${section} · ${j + 1}. ${v.view}: ${weight === null ? "no weight" : `weight ${fmt(weight, 3)}`}`, dataset: { video: j, weight: weight === null ? "" : String(weight) } });
      const a = weight === null || !top ? 0 : weight / top;
      cell.style.backgroundColor = `rgba(217, 95, 2, ${a.toFixed(3)})`;
      cell.addEventListener("click", () => { selectSection(section); focusVideo(j); });
      tr.append(cell);
    });
    tr.addEventListener("click", () => selectSection(section));
    body.append(tr);
  }
  table.append(el("thead", {}, head), body);
}

function renderReport(result, truth) {
  const report = $("#report");
  report.replaceChildren();
  const trueText = new Map(((truth && truth.sections) || []).map((s) => [s.section, s.text]));
  $("#truth-legend").hidden = !truth;
  document.body.classList.toggle("has-truth", Boolean(truth));
  for (const s of result.report || []) {
    const ev = ((result.evidence || {})[s.section] || []).slice(0, 2);
    const files = result.videos || [];
    const head = el("div", { class: "section-head" }, el("span", { class: "section-name" }, s.section));
    const pair = el("div", { class: "pair" },
      el("div", { class: "section-text" }, cleanText(s.section, s.text)));
    if (truth) {
      const ok = sectionAgreement(result, truth, s.section);
      if (ok !== null) head.append(el("span", { class: ok ? "agree yes" : "agree no" }, ok ? " ✓ agrees" : " ✗ differs"));
      pair.append(el("div", { class: "truth-text" }, el("span", { class: "truth-label" }, "truth: "), trueText.has(s.section) ? trueText.get(s.section) : "(the study's report has no such section)"));
    }
    const evText = ev.length
      ? `most weight: ${ev.map((e) => `${e.video + 1}. ${files[e.video] ? files[e.video].view : baseName(e.file)} (${fmt(e.weight, 3)})`).join(", ")}`
      : "no per-video weights for this section";
    const source = s.source_study && PSEUDONYM.test(s.source_study) ? ` · text of bank report ${s.source_study} (similarity ${fmt(s.similarity)})` : "";
    const li = el("li", { tabindex: "-1", role: "option", dataset: { section: s.section } }, head, pair, el("div", { class: "evidence" }, evText + source));
    li.addEventListener("click", () => selectSection(s.section));
    li.addEventListener("focus", () => { if (state.section !== s.section) selectSection(s.section); });
    report.append(li);
  }
}

function renderFiles(result) {
  const files = $("#files-table tbody");
  files.replaceChildren();
  for (const f of result.files || []) {
    files.append(el("tr", { class: f.status },
      el("td", {}, baseName(f.path)), el("td", {}, f.status), el("td", {}, f.reason || ""), el("td", {}, f.n_frames)));
  }
}

// The bundle's fine-tuned heads (result.tasks), one row each; the panel stays hidden without heads.
function renderTasks(result) {
  const tasks = Object.entries(result.tasks || {});
  $("#tasks-panel").hidden = tasks.length === 0;
  const tbody = $("#tasks tbody");
  tbody.replaceChildren();
  for (const [name, t] of tasks) {
    let answer = "–";
    if (t.kind === "regression" && present(t.value)) answer = `${fmt(t.value, 1)}${t.unit ? " " + t.unit : ""}`;
    else if (t.kind === "binary" && present(t.probability)) answer = `p ${fmt(t.probability)}`;
    else if (t.kind === "graded" && t.grade) answer = `${t.grade} (p ${fmt((t.probabilities || {})[t.grade])})`;
    else if (t.kind === "views") answer = (t.videos || []).map((v) => `${v.file}: ${v.view}`).join(" · ");
    tbody.append(el("tr", { dataset: { task: name, kind: t.kind || "" } },
      el("td", { class: "name" }, name.replace(/_/g, " ")),
      el("td", { class: "answer" }, answer),
      el("td", { class: "pooled" }, t.pooled_by || "per video")));
  }
}

async function render(result, example) {
  const truth = example && example.truth ? example.truth : null;
  state.result = result;
  state.example = example;
  $("#result").hidden = false;
  renderVideos(result, example);
  renderHeat(result);
  renderReport(result, truth);
  renderFindings(result, truth);
  renderTasks(result);
  renderFiles(result);
  const used = (result.files || []).filter((f) => f.status === "used").length;
  $("#print-meta").textContent = `Printed ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC · ${used} of ${(result.files || []).length} files used` + (example ? ` · synthetic example ${example.index}` : "");
  if ((result.report || []).length) selectSection(result.report[0].section);
  focusVideo(0);
  window.scrollTo(0, 0);
  await startLoops();
}

async function interpret(files, example = null) {
  const form = new FormData();
  let total = 0;
  const ends = [];
  for (const f of files) { form.append("files", f, f.name); total += f.size; ends.push(total); }
  const buttons = document.querySelectorAll("#controls button");
  buttons.forEach((b) => (b.disabled = true));
  document.body.dataset.state = "working";
  status("");
  const t0 = performance.now();
  let timer = 0;
  const mb = (x) => (x / 1e6).toFixed(1);
  try {
    progress(`Uploading 0 of ${files.length} file(s)…`, 0);
    const { body: result, arrived } = await request("POST", "/v1/interpret?loops=true", form, (loaded, size, done) => {
      if (done) {
        const started = performance.now();
        const say = () => progress(`Read ${files.length} file(s); interpreting on the server… ${((performance.now() - started) / 1000).toFixed(0)} s`);
        say();
        timer = setInterval(say, 1000);
        return;
      }
      // The multipart body is the files in order plus a little framing: count those sent.
      const frac = size ? loaded / size : 0;
      const sent = ends.filter((e) => e <= frac * total).length;
      progress(`Uploading: ${sent} of ${files.length} file(s) sent (${mb(frac * total)} of ${mb(total)} MB)…`, frac);
    });
    clearInterval(timer);
    progress(`Rendering ${(result.videos || []).length} video(s)…`, 1);
    await render(result, example);
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    const renderMs = performance.now() - arrived;
    document.body.dataset.renderMs = renderMs.toFixed(0);
    const used = (result.files || []).filter((f) => f.status === "used").length;
    const secs = ((arrived - t0) / 1000).toFixed(1);
    if (result.status === "ok") status(`Interpreted ${used} of ${result.files.length} file(s) in ${secs} s (shown in ${renderMs.toFixed(0)} ms).`, "ok");
    else status(`No usable video in the study (${result.status}): see the files' reasons below.`, "input");
    document.body.dataset.state = "done";
  } catch (e) {
    status(e.message, e.kind || "server");
    document.body.dataset.state = "error";
  } finally {
    clearInterval(timer);
    progress(null);
    buttons.forEach((b) => (b.disabled = false));
  }
}

function b64ToFile(f) {
  const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
  return new File([bytes], f.name, { type: f.media_type });
}

$("#save-key").addEventListener("click", async () => {
  sessionStorage.setItem(KEY_STORE, $("#api-key").value.trim());
  if (await loadModel()) status("Key accepted.", "ok");
});
$("#interpret").addEventListener("click", () => {
  const files = Array.from($("#files").files || []);
  if (!files.length) { status("Choose the study's files first.", "input"); return; }
  interpret(files);
});
$("#example").addEventListener("click", async () => {
  const index = Number($("#example-index").value || 0);
  document.body.dataset.state = "working";
  progress(`Making synthetic example ${index} on the server…`);
  status("");
  try {
    const { body: ex } = await request("GET", `/v1/examples/${index}`);
    progress(`Read ${ex.files.length} file(s) of example ${index}.`, 0);
    await interpret(ex.files.map(b64ToFile), ex);
  } catch (e) {
    progress(null);
    status(e.message, e.kind || "server");
    document.body.dataset.state = "error";
  }
});
$("#play-all").addEventListener("click", () => playAll(!state.playing));
$("#step-back").addEventListener("click", () => { state.playing = false; $("#play-all").textContent = "Play all"; state.loops.forEach((l) => step(l, -1)); });
$("#step-fwd").addEventListener("click", () => { state.playing = false; $("#play-all").textContent = "Play all"; state.loops.forEach((l) => step(l, 1)); });
document.addEventListener("keydown", onKey);
if (sessionStorage.getItem(KEY_STORE)) {
  $("#api-key").value = sessionStorage.getItem(KEY_STORE);
  loadModel();
}
