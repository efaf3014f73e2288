// The status page: one live stream (/api/stream), frames fetched as they are announced.
"use strict";
const $ = (sel, el = document) => el.querySelector(sel);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const cards = new Map();
let zones = {}, received = 0, lastMessage = 0;

function fmt(v, unit = "", digits = 1) { return v === null || v === undefined ? "–" : (+v).toFixed(digits) + unit; }

function card(name, view) {
  if (cards.has(name)) return cards.get(name);
  const c = el("section", "card"); c.dataset.name = name;
  const h = el("h2", null, name); h.append(el("small", null, view.audio ? "speech" : "vision")); c.append(h);
  if (view.audio) {
    c.append(el("div", "bar")); $(".bar", c).append(el("i"));
    c.append(el("div", "state", "silence"));
    c.append(el("ul", "transcripts"));
  } else {
    const cv = el("canvas"); cv.width = 640; cv.height = 360; c.append(cv);
  }
  c.append(el("div", "result")); c.append(el("div", "stats")); c.append(el("div", "counts"));
  $("#pipelines").append(c);
  const state = { el: c, busy: false, next: null, results: new Map() };
  cards.set(name, state);
  return state;
}

function summary(kind, d) {
  switch (kind) {
    case "detections": return d.detections.map(x => `${x.label} ${x.score.toFixed(2)}`).join(", ") || "nothing";
    case "classification": return d.labels.slice(0, 3).map(x => `${x.label} ${x.score.toFixed(2)}`).join(", ");
    case "transcript": return `“${d.text}”`;
    case "speech": return `speech ${d.event || d.edge || ""}`;
    case "object": return `${d.type} ${d.after.label} ${d.after.id}` + (d.after.current_zones.length ? ` in ${d.after.current_zones.join(", ")}` : "");
    case "snapshot": return `snapshot of ${d.label} ${d.object_id}`;
    default: return kind;
  }
}

function addEvent(m) {
  const li = el("li"), t = new Date(m.at).toLocaleTimeString();
  li.append(el("span", null, `${t} ${m.pipeline}`), document.createTextNode(summary(m.kind, m.data)));
  const list = $("#events"); list.prepend(li);
  while (list.children.length > 50) list.lastChild.remove();
}

function drawFrame(state, name, seq, bitmap) {
  const cv = $("canvas", state.el), ctx = cv.getContext("2d");
  cv.width = bitmap.width; cv.height = bitmap.height; ctx.drawImage(bitmap, 0, 0);
  const r = state.results.get(seq); if (!r) return;
  const s = bitmap.width / r.image.width;
  ctx.lineWidth = Math.max(2, bitmap.width / 320); ctx.font = `${Math.max(12, bitmap.width / 40)}px sans-serif`;
  for (const [zn, z] of Object.entries(zones[name] || {})) {
    const k = z.coordinates === "pixels" ? [s, s] : [bitmap.width, bitmap.height];
    ctx.strokeStyle = "#ffd400"; ctx.setLineDash([6, 4]); ctx.beginPath();
    z.points.forEach(([x, y], i) => i ? ctx.lineTo(x * k[0], y * k[1]) : ctx.moveTo(x * k[0], y * k[1]));
    ctx.closePath(); ctx.stroke(); ctx.setLineDash([]); ctx.fillStyle = "#ffd400"; ctx.fillText(zn, z.points[0][0] * k[0] + 4, z.points[0][1] * k[1] + 14);
  }
  const placed = [], fh = parseInt(ctx.font);
  for (const d of r.detections || []) {
    const [x0, y0, x1, y1] = d.box.map(v => v * s);
    ctx.strokeStyle = "#00e676"; ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const label = `${d.label} ${d.score.toFixed(2)}`, w = ctx.measureText(label).width + 6;
    // above the box, or inside it at the frame's top; below any label already there
    let y = y0 - fh - 4 >= 0 ? y0 - fh - 4 : y0;
    while (placed.some(p => x0 < p.x + p.w && p.x < x0 + w && y < p.y + fh + 4 && p.y < y + fh + 4)) y += fh + 4;
    placed.push({ x: x0, y, w });
    ctx.fillStyle = "#00e676"; ctx.fillRect(x0, y, w, fh + 4);
    ctx.fillStyle = "#000"; ctx.fillText(label, x0 + 3, y + fh);
  }
  if (r.labels) {
    const label = r.labels.slice(0, 1).map(x => `${x.label} ${x.score.toFixed(2)}`).join("");
    ctx.fillStyle = "#000a"; ctx.fillRect(0, 0, ctx.measureText(label).width + 12, parseInt(ctx.font) + 10);
    ctx.fillStyle = "#fff"; ctx.fillText(label, 6, parseInt(ctx.font) + 3);
  }
  cv.dataset.frameSeq = seq;
}

async function fetchFrame(name, seq) {
  const state = cards.get(name); if (!state) return;
  if (state.busy) { state.next = seq; return; }
  state.busy = true;
  try {
    const res = await fetch(`api/pipelines/${encodeURIComponent(name)}/latest.jpg?seq=${seq}`);
    if (res.ok) {
      const got = +res.headers.get("x-frame-seq");
      drawFrame(state, name, got, await createImageBitmap(await res.blob()));
    }
  } catch (e) { /* the stream's error handler says the agent is gone */ }
  state.busy = false;
  if (state.next !== null) { const n = state.next; state.next = null; fetchFrame(name, n); }
}

function stat(k, label, v) { return `<span data-k="${k}">${label} <b>${v}</b></span>`; }

function onStatus(m) {
  const h = m.health; $("#device").textContent = h.device;
  const o = h.outbox;
  $("#health").innerHTML = [
    stat("broker", "broker", h.broker_connected ? "<span class=ok>connected</span>" : "<span class=bad>away</span>"),
    stat("outbox", "outbox", `${o.messages} msgs`), stat("rss", "memory", fmt(h.rss_bytes / 1048576, " MB", 0)),
    stat("temp", "CPU", fmt(h.cpu_temp_c, " °C")), stat("uptime", "up", `${h.uptime_secs} s`), stat("viewers", "pages", m.viewers),
  ].join("");
  for (const [name, s] of Object.entries(h.pipelines)) {
    const v = m.pipelines[name]; if (!v) continue;
    const state = card(name, v); zones[name] = v.zones;
    $(".stats", state.el).innerHTML = [
      stat("source", "source", s.source_up ? "<span class=ok>up</span>" : "<span class=bad>down</span>"),
      stat("fps", "fps", fmt(s.fps, "", 2)), stat("p50", "p50", fmt(s.inference_ms_p50, " ms")), stat("p95", "p95", fmt(s.inference_ms_p95, " ms")),
      stat("frames", v.audio ? "blocks" : "frames", s.frames_done), stat("dropped", "dropped", s.dropped), stat("errors", "errors", s.errors),
    ].concat(s.decode_ms === undefined ? [] : [stat("decode", "decode", fmt(s.decode_ms, " ms"))]).join("");
    const r = v.last_result;
    if (r && r.schema) $(".result", state.el).textContent = summary(r.detections ? "detections" : r.labels ? "classification" : "transcript", r);
    const counts = Object.entries(v.counts).map(([k, n]) => `${k}: ${n}`).join(" · ");
    $(".counts", state.el).textContent = counts;
    if (v.audio) {
      const ul = $(".transcripts", state.el); ul.replaceChildren(...v.transcripts.slice().reverse().map(t => el("li", null, t.text)));
    }
  }
  const ups = $("#updates"); ups.replaceChildren();
  for (const [k, u] of Object.entries(m.updates)) {
    ups.append(el("dt", null, k));
    ups.append(el("dd", null, u.version ? `version ${u.version}` + (u.previous ? ` (previous ${u.previous})` : "") : `${u.state || ""} ${u.error || u.message || ""}`));
  }
  if (!ups.children.length) ups.append(el("dd", null, "no heads or updated models"));
}

function onLevels(m) {
  for (const [name, l] of Object.entries(m.levels)) {
    const state = cards.get(name); if (!state) continue;
    $(".bar i", state.el).style.width = `${Math.round(l.level * 100)}%`;
    state.el.classList.toggle("speaking", l.speaking);
    $(".state", state.el).textContent = l.speaking ? "speaking" : "silence";
  }
}

async function loadEvents() {
  try {
    const res = await fetch("api/events?limit=50");
    if (res.ok) { $("#events").replaceChildren(); (await res.json()).forEach(addEvent); }
  } catch (e) { }
}

function connect() {
  const es = new EventSource("api/stream");
  const conn = $("#conn");
  es.onopen = () => { conn.textContent = "live"; conn.className = "ok"; loadEvents(); };
  es.onerror = () => { conn.textContent = "agent unreachable: reconnecting…"; conn.className = "bad"; };
  es.onmessage = ev => {
    const m = JSON.parse(ev.data); received++; lastMessage = Date.now();
    document.body.dataset.received = received;
    if (m.type === "status") onStatus(m);
    else if (m.type === "levels") onLevels(m);
    else if (m.type === "event") addEvent(m);
    else if (m.type === "frame") {
      const state = cards.get(m.pipeline); if (!state) return;
      state.results.set(m.seq, m.result);
      for (const k of state.results.keys()) if (state.results.size > 8) state.results.delete(k);
      fetchFrame(m.pipeline, m.seq);
    } else if (m.type === "lagged") loadEvents();
  };
  // a stream that goes quiet (status comes every second) is a lost agent too
  setInterval(() => { if (lastMessage && Date.now() - lastMessage > 5000) { conn.textContent = "agent unreachable: reconnecting…"; conn.className = "bad"; } }, 1000);
}
connect();
