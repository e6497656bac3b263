// The live page: draws the snapshot the server streams once a second (server-sent events).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const STAGE_W = 240, QUEUE_W = 178, COL_GAP = 50, GAP = 26, PAD = 24;
  const REP_H = 22, STAGE_HEAD = 62, QUEUE_H = 92;
  const edgesG = document.getElementById("edges");
  const nodesG = document.getElementById("nodes");
  const svg = document.getElementById("graph");
  const edgeEls = new Map();
  let openDlq = null;
  let dlqWaiting = null;
  let latest = null;

  function el(name, attrs, parent, text) {
    const e = document.createElementNS(SVG, name);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function rate(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k/s";
    return (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + "/s";
  }
  function count(v) {
    if (v === null || v === undefined) return "–";
    return Number(v).toLocaleString("en-US");
  }
  function clip(s, n) { s = String(s); return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  function heightOf(id, snap) {
    if (id.startsWith("q:")) return QUEUE_H;
    const s = snap.stages[id.slice(2)];
    const reps = Math.max(1, s.replicas.length);
    return STAGE_HEAD + reps * REP_H + (s.progress !== null ? 18 : 0) + 10;
  }

  function place(snap) {
    const cols = new Map();
    for (const n of snap.nodes) {
      if (!cols.has(n.col)) cols.set(n.col, []);
      cols.get(n.col).push(n);
    }
    const heights = new Map();
    let tallest = 0;
    for (const [c, list] of cols) {
      list.sort((a, b) => a.row - b.row);
      const h = list.reduce((acc, n) => acc + heightOf(n.id, snap), 0) + GAP * (list.length - 1);
      heights.set(c, h);
      tallest = Math.max(tallest, h);
    }
    // A column is as wide as its widest node: queues are narrower than stages.
    const colX = new Map(), colW = new Map();
    let x = PAD;
    for (const c of [...cols.keys()].sort((a, b) => a - b)) {
      const w = Math.max(...cols.get(c).map(n => n.id.startsWith("q:") ? QUEUE_W : STAGE_W));
      colX.set(c, x); colW.set(c, w);
      x += w + COL_GAP;
    }
    const pos = new Map();
    for (const [c, list] of cols) {
      let y = PAD + (tallest - heights.get(c)) / 2;
      for (const n of list) {
        const h = heightOf(n.id, snap);
        const w = n.id.startsWith("q:") ? QUEUE_W : STAGE_W;
        pos.set(n.id, { x: colX.get(c) + (colW.get(c) - w) / 2, y: y, w: w, h: h });
        y += h + GAP;
      }
    }
    const width = x - COL_GAP + PAD;
    return { pos: pos, width: width, height: tallest + PAD * 2 };
  }

  function drawStage(g, s, p) {
    g.setAttribute("class", "node stage " + s.state);
    g.setAttribute("data-node", s.id);
    g.setAttribute("data-state", s.state);
    el("rect", { class: "card", x: 0, y: 0, width: p.w, height: p.h, rx: 10 }, g);
    el("rect", { class: "accent", x: 0, y: 0, width: 5, height: p.h, rx: 2.5 }, g);
    el("text", { class: "title", x: 16, y: 22 }, g, clip(s.name, 22));
    const label = s.state;
    const pw = label.length * 7 + 14;
    el("rect", { class: "pill " + s.state, x: p.w - pw - 10, y: 9, width: pw, height: 18, rx: 9 }, g);
    el("text", { class: "pill-text", x: p.w - pw / 2 - 10, y: 22, "text-anchor": "middle" }, g, label);
    const source = !s.inputs.length;
    const f = el("text", { class: "fig", x: 16, y: 42 }, g);
    if (!source) {
      el("tspan", { class: "rate-in", "data-value": s.in_rate }, f, "in " + rate(s.in_rate));
      el("tspan", {}, f, "  ·  ");
    }
    if (s.outputs.length) {
      el("tspan", { class: "rate-out", "data-value": s.out_rate }, f, "out " + rate(s.out_rate));
    } else f.lastChild && f.removeChild(f.lastChild);  // a sink: no "·" before nothing
    const f2 = el("text", { class: "sub", x: 16, y: 57 }, g);
    el("tspan", {}, f2, source ? count(s.published) + " sent" : count(s.processed) + " done");
    const bad = el("tspan", { class: s.failed ? "fig bad failed" : "failed", dx: 8 }, f2,
                   s.failed ? "· " + count(s.failed) + " failed" : "· 0 failed");
    bad.setAttribute("data-value", s.failed);
    if (s.last_error) el("title", {}, g, s.last_error);
    let y = STAGE_HEAD;
    if (s.progress !== null) {
      el("rect", { class: "bar-bg", x: 16, y: y, width: p.w - 32, height: 6, rx: 3 }, g);
      el("rect", { class: "bar-fg progress", x: 16, y: y, width: Math.max(0, (p.w - 32) * s.progress), height: 6, rx: 3,
                   "data-value": s.progress }, g);
      el("text", { class: "sub", x: p.w - 16, y: y - 3, "text-anchor": "end" }, g,
         s.state === "ended" ? "run ended" : Math.round(s.progress * 100) + "%");
      y += 18;
    }
    if (!s.replicas.length) {
      el("text", { class: "sub", x: 16, y: y + 15 }, g, "no replica has reported");
    }
    for (const r of s.replicas) {
      const rg = el("g", { class: "replica " + r.state, "data-replica": r.id, "data-state": r.state,
                           transform: "translate(8," + y + ")" }, g);
      el("rect", { class: "rep-bg", x: 0, y: 1, width: p.w - 16, height: REP_H - 3, rx: 5 }, rg);
      el("circle", { class: "rep-dot " + r.state, cx: 11, cy: REP_H / 2, r: 4.5 }, rg);
      el("text", { x: 22, y: 15 }, rg, clip(r.host + ":" + r.pid, 16));
      el("text", { class: "rep-state", x: 128, y: 15 }, rg, r.state);
      el("text", { class: "rep-rate", x: p.w - 24, y: 15, "text-anchor": "end" }, rg,
         r.state === "silent" ? r.age.toFixed(0) + "s ago" : rate(source ? r.out_rate : r.in_rate));
      el("title", {}, rg, r.id + " · " + count(r.processed) + " processed, " + count(r.failed) +
         " failed" + (r.last_error ? "\n" + r.last_error : ""));
      y += REP_H;
    }
  }

  function drawQueue(g, q, p) {
    g.setAttribute("class", "node queue" + (q.growing ? " growing" : ""));
    g.setAttribute("data-node", q.id);
    el("rect", { class: "card", x: 0, y: 0, width: p.w, height: p.h, rx: 16 }, g);
    el("text", { class: "title", x: 14, y: 21 }, g, clip(q.name, 24));
    if (q.name !== q.topic) el("text", { class: "sub", x: 14, y: 35 }, g, clip(q.topic, 30));
    const b = el("text", { class: "backlog", x: 14, y: 58, "data-value": q.backlog }, g,
                 count(q.backlog) + (q.growing ? " ↑" : ""));
    el("text", { class: "sub", x: 16 + b.getComputedTextLength(), y: 58 }, g, " backlog");
    el("text", { class: "sub", x: 14, y: 78 }, g, "in " + rate(q.in_rate) + "  ·  out " + rate(q.out_rate));
    const has = q.dead_letters > 0;
    const label = "DLQ " + count(q.dead_letters);
    const w = label.length * 7 + 14;
    const badge = el("g", { class: "dlq-badge" + (has ? " has" : ""), "data-dlq": q.dlq,
                            transform: "translate(" + (p.w - w - 10) + ",8)", role: "button" }, g);
    el("rect", { x: 0, y: 0, width: w, height: 20, rx: 10 }, badge);
    el("text", { x: w / 2, y: 14, "text-anchor": "middle" }, badge, label);
    el("title", {}, badge, "dead letters of " + q.topic + (q.last_error ? "\nlast: " + q.last_error : "") +
       "\nclick to see them");
  }

  function edgePath(a, b) {
    const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x - 2, y2 = b.y + b.h / 2;
    const dx = Math.max(40, (x2 - x1) / 2);
    return "M" + x1 + "," + y1 + " C" + (x1 + dx) + "," + y1 + " " + (x2 - dx) + "," + y2 + " " + x2 + "," + y2;
  }

  function flowing(snap, from, to) {
    const q = from.startsWith("q:") ? snap.queues[from.slice(2)] : snap.queues[to.slice(2)];
    const s = from.startsWith("s:") ? snap.stages[from.slice(2)] : snap.stages[to.slice(2)];
    if (!q || !s) return false;
    return from.startsWith("s:") ? (s.out_rate || 0) > 0 || (q.in_rate || 0) > 0
                                 : (s.in_rate || 0) > 0 || (q.out_rate || 0) > 0;
  }

  function render(snap) {
    latest = snap;
    const empty = document.getElementById("empty");
    empty.hidden = snap.nodes.length > 0;
    const lay = place(snap);
    svg.setAttribute("width", Math.max(lay.width, 300));
    svg.setAttribute("height", Math.max(lay.height, 200));
    const seen = new Set();
    for (const [from, to] of snap.edges) {
      const key = from + "->" + to;
      seen.add(key);
      let path = edgeEls.get(key);
      if (!path) {  // kept between updates, so the flow animation does not restart
        path = el("path", { "data-edge": key }, edgesG);
        edgeEls.set(key, path);
      }
      const a = lay.pos.get(from), b = lay.pos.get(to);
      if (!a || !b) continue;
      const live = flowing(snap, from, to);
      path.setAttribute("d", edgePath(a, b));
      path.setAttribute("class", "edge" + (live ? " live" : ""));
      path.setAttribute("marker-end", live ? "url(#arrow-live)" : "url(#arrow)");
    }
    for (const [key, path] of edgeEls) {
      if (!seen.has(key)) { path.remove(); edgeEls.delete(key); }
    }
    nodesG.textContent = "";
    for (const n of snap.nodes) {
      const p = lay.pos.get(n.id);
      const g = el("g", { transform: "translate(" + p.x + "," + p.y + ")" }, nodesG);
      if (n.id.startsWith("s:")) drawStage(g, snap.stages[n.id.slice(2)], p);
      else drawQueue(g, snap.queues[n.id.slice(2)], p);
    }
    const stages = Object.values(snap.stages);
    const reps = stages.reduce((a, s) => a + s.replicas.length, 0);
    const silent = stages.reduce((a, s) => a + s.replicas.filter(r => r.state === "silent").length, 0);
    const dead = Object.values(snap.queues).reduce((a, q) => a + (q.dead_letters || 0), 0);
    document.getElementById("totals").innerHTML =
      "<b>" + stages.length + "</b> stages · <b>" + Object.keys(snap.queues).length + "</b> queues · <b>" +
      reps + "</b> replicas" + (silent ? " · <b style='color:#fca5a5'>" + silent + " silent</b>" : "") +
      " · <b>" + count(dead) + "</b> dead letters";
    document.getElementById("where").textContent = snap.url;
    if (openDlq) refreshDlqCount();
  }

  // -- dead letters ---------------------------------------------------------
  function text(tag, cls, value) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    e.textContent = value;
    return e;
  }
  function refreshDlqCount() {
    const q = latest && Object.values(latest.queues).find(x => x.dlq === openDlq);
    document.getElementById("dlq-count").textContent = q
      ? count(q.dead_letters) + " in the topic" +
        (dlqWaiting === null ? "" : " · " + count(dlqWaiting) + " waiting to replay") +
        " · from " + q.topic : "";
  }
  let shownNewest = null;
  async function showDlq(topic) {
    if (openDlq !== topic) {
      dlqWaiting = null; shownNewest = null;
      const out = document.getElementById("replay-result");
      out.textContent = "";
      out.removeAttribute("data-replayed");
    }
    openDlq = topic;
    const drawer = document.getElementById("drawer");
    drawer.hidden = false;
    document.getElementById("dlq-title").textContent = topic;
    refreshDlqCount();
    const res = await fetch("/api/dlq?topic=" + encodeURIComponent(topic) + "&limit=20");
    const body = await res.json();
    if (openDlq !== topic) return;
    dlqWaiting = body.waiting;
    refreshDlqCount();
    const newest = body.letters.length ? body.letters[0].source_topic + "@" + body.letters[0].offset +
      "/" + body.letters[0].failed_at : "";
    if (newest === shownNewest) return;  // nothing new: keep the reader's scroll and folds
    shownNewest = newest;
    const list = document.getElementById("letters");
    list.textContent = "";
    if (!body.letters.length) list.appendChild(text("div", "muted", "No dead letter read yet."));
    for (const x of body.letters) {
      const card = document.createElement("div");
      card.className = "letter";
      card.appendChild(text("div", "why", x.error_type + ": " + x.error));
      const when = x.failed_at ? new Date(x.failed_at * 1000).toLocaleTimeString() : "";
      card.appendChild(text("div", "meta", x.source_topic + "[" + x.partition + "]@" + x.offset +
        (x.handler ? " · handler " + x.handler : "") + " · " + x.attempts + " attempt(s) · " + when));
      const orig = document.createElement("details");
      orig.open = true;
      orig.appendChild(text("summary", "", "original (" + x.size + " bytes)"));
      orig.appendChild(text("pre", "original", x.original === null ? (x.null_value ? "null (a tombstone)" :
        JSON.stringify(x.fields, null, 2)) : JSON.stringify(x.original, null, 2)));
      card.appendChild(orig);
      const hs = Object.entries(x.headers);
      if (hs.length) {
        const det = document.createElement("details");
        det.appendChild(text("summary", "", "headers (" + hs.length + ")"));
        const table = document.createElement("table");
        for (const [k, v] of hs) {
          const tr = document.createElement("tr");
          tr.appendChild(text("td", "", k));
          tr.appendChild(text("td", "", v));
          table.appendChild(tr);
        }
        det.appendChild(table);
        card.appendChild(det);
      }
      list.appendChild(card);
    }
  }
  async function replay(limit) {
    const out = document.getElementById("replay-result");
    const buttons = document.querySelectorAll(".actions .btn");
    buttons.forEach(b => { b.disabled = true; });
    out.textContent = "replaying…";
    try {
      const res = await fetch("/api/replay", {
        method: "POST", headers: { "Content-Type": "application/json", "X-Requested-With": "mlops-async" },
        body: JSON.stringify({ topic: openDlq, limit: limit }),
      });
      const body = await res.json();
      out.textContent = res.ok ? "replayed " + body.replayed : body.error;
      out.setAttribute("data-replayed", res.ok ? body.replayed : "error");
      if (res.ok) setTimeout(() => { if (openDlq) showDlq(openDlq); }, 1200);
    } catch (e) {
      out.textContent = String(e);
    } finally {
      buttons.forEach(b => { b.disabled = false; });
    }
  }
  setInterval(() => { if (openDlq) showDlq(openDlq); }, 3000);  // new letters, what waits
  document.getElementById("dlq-close").onclick = () => {
    openDlq = null;
    document.getElementById("drawer").hidden = true;
  };
  document.getElementById("replay-one").onclick = () => replay(1);
  document.getElementById("replay-all").onclick = () => replay(null);
  // On press, not on click: the graph is redrawn every second, and a click whose press and
  // release land on two drawings of the badge would be lost.
  nodesG.addEventListener("pointerdown", ev => {
    const badge = ev.target.closest("[data-dlq]");
    if (badge) showDlq(badge.getAttribute("data-dlq"));
  });

  // -- the stream -----------------------------------------------------------
  function status(on, words) {
    document.getElementById("live-dot").className = "dot " + (on ? "on" : "off");
    document.getElementById("live-text").textContent = words;
  }
  const events = new EventSource("/events");
  events.onmessage = ev => {
    const snap = JSON.parse(ev.data);
    if (snap.error) { status(false, "bus: " + snap.error.slice(0, 60)); return; }
    render(snap);
    status(true, "live · " + new Date(snap.at * 1000).toLocaleTimeString());
    document.body.setAttribute("data-updated", String(snap.at));
  };
  events.onerror = () => status(false, "reconnecting");
})();
