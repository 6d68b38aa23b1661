// edge-trash operator page: polls the device service's read-only JSON endpoints.
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
function url(path) {
  return token ? path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : path;
}
async function getJSON(path) {
  const r = await fetch(url(path), {cache: "no-store"});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
function fmtMs(pair) {
  if (!pair || pair.p50 === null || pair.p50 === undefined) return "-";
  return pair.p50.toFixed(1) + " / " + pair.p99.toFixed(1) + " ms";
}
function fmtBytes(n) {
  if (n === undefined) return "?";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
function fmtDuration(s) {
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return (h ? h + " h " : "") + m + " min " + Math.floor(s % 60) + " s";
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}

let lastSeq = -1;
let live = null;
const img = document.getElementById("frame");
const canvas = document.getElementById("overlay");
img.addEventListener("load", drawOverlay);

function drawOverlay() {
  if (!live) return;
  canvas.width = img.clientWidth; canvas.height = img.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const sx = canvas.width / (live.width || 1), sy = canvas.height / (live.height || 1);
  const trig = live.trigger || {};
  if (trig.position !== undefined) {
    ctx.strokeStyle = "#ffcc00"; ctx.setLineDash([8, 6]); ctx.lineWidth = 2; ctx.beginPath();
    if (trig.axis === "y") { const y = trig.position * canvas.height; ctx.moveTo(0, y); ctx.lineTo(canvas.width, y); }
    else { const x = trig.position * canvas.width; ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); }
    ctx.stroke(); ctx.setLineDash([]);
  }
  ctx.font = "12px sans-serif";
  for (const t of live.tracks) {
    const [x0, y0, x1, y1] = t.box;
    ctx.strokeStyle = t.decided ? "#66ff66" : "#00c8ff"; ctx.lineWidth = 2;
    ctx.strokeRect(x0 * sx, y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy);
    const label = "#" + t.track_id + " " + t.label + " " + (t.score * 100).toFixed(0) + "%";
    ctx.fillStyle = "rgba(0,0,0,.7)"; ctx.fillRect(x0 * sx, y0 * sy - 15, ctx.measureText(label).width + 6, 15);
    ctx.fillStyle = "#fff"; ctx.fillText(label, x0 * sx + 3, y0 * sy - 3);
  }
}

async function refreshLive() {
  live = await getJSON("api/live");
  const acc = document.getElementById("accelerator");
  const onTpu = live.accelerator === "edgetpu";
  acc.textContent = onTpu ? "model: Edge TPU" : "model: CPU FALLBACK (" + live.accelerator + ")";
  acc.className = "badge " + (onTpu ? "tpu" : "cpu");
  if (live.seq !== lastSeq && live.seq >= 0) {
    lastSeq = live.seq;
    img.src = url("api/frame.jpg?seq=" + live.seq);
    document.getElementById("frame-seq").textContent = "frame " + live.seq;
  } else {
    drawOverlay();
  }
}

async function refreshStatus() {
  const [s, c] = await Promise.all([getJSON("api/status"), getJSON("api/counts")]);
  const warn = document.getElementById("cpu-warning");
  if (s.accelerator !== "edgetpu") {
    warn.hidden = false;
    warn.textContent = "Running on the CPU, not the Edge TPU: " + (s.warning || "no Edge TPU in use") ;
  } else { warn.hidden = true; }
  const problems = document.getElementById("problems");  // what /health answers 503 for
  problems.hidden = !(s.problems || []).length;
  problems.textContent = problems.hidden ? "" : "Items are not being sorted as they should: " + s.problems.join("; ");
  const lastHour = c.last_hour || {};  // the last 60 minutes by the board's clock, not the browser's
  const tbody = document.querySelector("#bins tbody");
  tbody.replaceChildren();
  for (const bin of [...new Set([...Object.keys(c.per_bin), ...Object.keys(lastHour)])].sort()) {
    const tr = el("tr", {"data-bin": bin});
    tr.append(el("td", {}, bin), el("td", {"class": "count"}, String(c.per_bin[bin] || 0)),
      el("td", {"class": "hour"}, String(lastHour[bin] || 0)));
    tbody.append(tr);
  }
  document.getElementById("ipm").textContent = c.items_per_minute.toFixed(1);
  document.getElementById("latency").textContent = fmtMs(s.first_sight_to_actuation_ms);
  document.getElementById("infer").textContent = fmtMs(s.inference_ms);
  const age = s.last_frame_age_s;
  document.getElementById("fps").textContent = (s.fps || 0).toFixed(1) +
    (age !== null && age !== undefined && age > 5 ? " (NO frame for " + fmtDuration(age) + ")" : "");
  document.getElementById("dropped").textContent = String(s.dropped_frames || 0);
  document.getElementById("faults").textContent = String((s.counters || {}).faults || 0);
  const h = s.health || {};
  document.getElementById("uptime").textContent = fmtDuration(s.uptime_s || 0);
  document.getElementById("tpu").textContent = h.tpu_present ? "yes" : "NO";
  const temps = h.temperatures_c || {};
  document.getElementById("temps").textContent = Object.keys(temps).length ?
    Object.entries(temps).map(([k, v]) => k + " " + v + " °C").join(", ") : "not exposed";
  const d = h.disk || {};
  document.getElementById("disk").textContent = fmtBytes(d.log_bytes) + " / " + fmtBytes(d.queue_bytes) + " / " + fmtBytes(d.free_bytes);
  const faults = document.getElementById("recent-faults");
  faults.replaceChildren();
  for (const f of (s.recent_faults || []).slice(0, 5)) faults.append(el("li", {}, f.kind + ": " + f.message));
}

async function refreshDecisions() {
  const data = await getJSON("api/decisions?limit=12");
  const box = document.getElementById("decisions");
  box.replaceChildren();
  for (const d of data.decisions) {
    const card = el("div", {"class": "card decision", "data-id": String(d.id)});
    const thumb = el("img", {alt: d.label, src: url(d.thumb)});
    thumb.addEventListener("error", () => thumb.remove());
    const votes = Object.entries(d.votes || {}).map(([k, v]) => k + " " + v.frames).join(", ");
    card.append(thumb, el("div", {"class": "label"}, d.label + " " + (d.score * 100).toFixed(0) + "%"),
      el("div", {"class": "bin"}, "→ " + (d.actuated_bin || d.bin) + " (" + d.status + ")"), el("div", {}, "votes: " + votes));
    box.append(card);
  }
}

async function refreshQueue() {
  const data = await getJSON("api/queue?limit=30");
  const box = document.getElementById("queue");
  box.replaceChildren();
  for (const q of data.items.slice(0, 30)) {
    const card = el("div", {"class": "card hard"});
    card.append(el("img", {alt: q.file, src: url(q.image_url)}),
      el("div", {}, q.reason + ", best " + ((q.best_score || 0) * 100).toFixed(0) + "%"),
      el("div", {}, (q.detections || []).map(x => x.label).join(", ")));
    box.append(card);
  }
}

document.getElementById("queue-download").href = url("api/queue.coco.json");

function loop(fn, ms) {
  const conn = document.getElementById("conn");
  const tick = async () => {
    try { await fn(); conn.textContent = "live"; conn.className = "badge"; }
    catch (e) { conn.textContent = "disconnected"; conn.className = "badge down"; }
    setTimeout(tick, ms);
  };
  tick();
}
loop(refreshLive, 250);
loop(refreshStatus, 1000);
loop(refreshDecisions, 1000);
loop(refreshQueue, 5000);
