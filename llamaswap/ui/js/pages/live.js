// Live: the coexistence graph with the running set highlighted, swaps in progress with their
// elapsed load time, the queue, in-flight requests (per model, and each one with a Cancel
// button: POST /api/inflight/{id}/cancel), and a what-if box (/api/plan).

import { getJSON, post } from "../api.js";
import { badge, clear, fmtSeconds, h, names, s } from "../dom.js";

let view = null; // this mount's state

function layout(nodes) {
  const n = nodes.length;
  const radius = n <= 1 ? 0 : Math.max(120, n * 22);
  const size = 2 * radius + 150;
  const c = size / 2;
  const at = new Map();
  nodes.forEach((node, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, n);
    at.set(node.model, { x: c + radius * Math.cos(angle), y: c + radius * Math.sin(angle) });
  });
  return { size, at };
}

function drawGraph() {
  const { graph, svgBox } = view;
  if (!graph) return;
  const { size, at } = layout(graph.nodes);
  const svg = s("svg", { class: "graph", id: "coexist-graph", viewBox: `0 0 ${size} ${size}`, role: "img",
    "aria-label": "which models can run together" });
  const edges = s("g", { class: "edges" });
  const labels = graph.nodes.length <= 14;
  for (const e of graph.edges) {
    const a = at.get(e.a), b = at.get(e.b);
    const width = 1.5 + Math.min(5, Math.log2(1 + (e.weight || 1)));
    edges.append(s("line", { class: "edge", x1: a.x, y1: a.y, x2: b.x, y2: b.y, "stroke-width": width,
      dataset: { a: e.a, b: e.b } }, s("title", {}, `${e.a} + ${e.b}${e.label ? `: ${e.label}` : ""}`)));
    if (labels && e.label) {
      edges.append(s("text", { class: "weight", x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 6 }, e.weight ?? ""));
    }
  }
  const nodes = s("g", { class: "nodes" });
  for (const node of graph.nodes) {
    const p = at.get(node.model);
    const label = node.model.length > 22 ? `${node.model.slice(0, 21)}…` : node.model;
    nodes.append(s("g", { class: ["node", node.alone && "alone"], dataset: { model: node.model }, transform: `translate(${p.x},${p.y})` },
      s("circle", { r: 22 }),
      s("text", { y: 38 }, label),
      s("title", {}, `${node.label}${node.alone ? "\nruns alone" : ""}`)));
  }
  svg.append(edges, nodes);
  clear(svgBox, svg);
  view.svg = svg;
  paint();
}

// Classes only: the running set, loading models, and the what-if answer.
function paint() {
  const { svg, models, whatif, swaps } = view;
  if (!svg) return;
  const state = new Map((models || []).map((m) => [m.id, m.state]));
  const loading = new Set((swaps || []).map((w) => w.model));
  const running = new Set([...state].filter(([, st]) => st === "ready").map(([m]) => m));
  const stopping = new Set([...state].filter(([, st]) => st === "stopping").map(([m]) => m));
  for (const [m, st] of state) if (st === "starting") loading.add(m);
  const target = whatif ? whatif.model : null;
  const evict = new Set(whatif ? whatif.evict : []);
  const targetSet = new Set(whatif ? whatif.target_set : []);
  for (const g of svg.querySelectorAll("g.node")) {
    const m = g.dataset.model;
    g.classList.toggle("running", running.has(m) && !loading.has(m));
    g.classList.toggle("loading", loading.has(m));
    g.classList.toggle("stopping", stopping.has(m) && !loading.has(m));
    g.classList.toggle("target", m === target);
    g.classList.toggle("evict", evict.has(m));
  }
  const live = (m) => running.has(m) || loading.has(m);
  for (const line of svg.querySelectorAll("line.edge")) {
    const { a, b } = line.dataset;
    line.classList.toggle("running", live(a) && live(b));
    line.classList.toggle("whatif", targetSet.has(a) && targetSet.has(b));
  }
  const set = [...running].filter((m) => !loading.has(m)).sort();
  const parts = [set.length ? `Running now: ${set.join(", ")}` : "Nothing is running."];
  if (loading.size) parts.push(`loading: ${[...loading].sort().join(", ")}`);
  if (stopping.size) parts.push(`stopping: ${[...stopping].sort().join(", ")}`);
  view.runningText.textContent = parts.join(" · ");
  view.svg.dataset.running = set.join(",");
}

function drawQueue() {
  const q = view.queue;
  if (!q) return;
  clear(view.swapsBox, q.swaps.length ? h("table", {}, h("thead", {}, h("tr", {},
    h("th", {}, "Loading"), h("th", {}, "Evicting"), h("th", {}, "Set"), h("th", { class: "num" }, "Elapsed"))),
  h("tbody", {}, q.swaps.map((w) => h("tr", { dataset: { model: w.model } },
    h("td", {}, h("strong", {}, w.model), w.requested !== w.model ? h("span", { class: "muted" }, ` (as ${w.requested})`) : null),
    h("td", {}, names(w.evict)), h("td", {}, w.set || "–"),
    h("td", { class: "num elapsed", dataset: { started: w.started } }, fmtSeconds(w.elapsed_s))))))
    : h("p", { class: "empty" }, "No swap in progress."));
  clear(view.queueBox, q.queue.length ? h("table", {}, h("thead", {}, h("tr", {},
    h("th", { class: "num" }, "#"), h("th", {}, "Model"), h("th", {}, "Asked as"), h("th", { class: "num" }, "Waiting"))),
  h("tbody", {}, q.queue.map((r, i) => h("tr", {},
    h("td", { class: "num" }, r.position ?? i + 1), h("td", {}, r.model), h("td", {}, r.requested),
    h("td", { class: "num" }, fmtSeconds(r.waited_s))))))
    : h("p", { class: "empty" }, "The queue is empty."));
  const busy = Object.entries(q.models).filter(([, m]) => m.in_flight || m.waiting);
  clear(view.flightBox, busy.length ? h("table", {}, h("thead", {}, h("tr", {},
    h("th", {}, "Model"), h("th", { class: "num" }, "Serving"), h("th", { class: "num" }, "Waiting"))),
  h("tbody", {}, busy.map(([m, v]) => h("tr", { dataset: { model: m } }, h("td", {}, m),
    h("td", { class: "num" }, v.in_flight), h("td", { class: "num" }, v.waiting)))))
    : h("p", { class: "empty" }, "No request in flight."));
}

function drawRequests() {
  const rows = [...view.inflight.values()];
  clear(view.requestsBox, rows.length ? h("table", {}, h("thead", {}, h("tr", {},
    h("th", {}, "Request"), h("th", {}, "Model"), h("th", {}, "Path"), h("th", {}, "State"), h("th", {}, ""))),
  h("tbody", {}, rows.map((r) => h("tr", { dataset: { id: r.id, model: r.model } },
    h("td", { class: "num" }, `#${r.id}`), h("td", {}, r.model), h("td", { class: "small" }, `${r.method} ${r.req_path}`),
    h("td", {}, badge(r.state)),
    h("td", {}, h("button", { class: "cancel", onclick: (e) => cancel(e.target, r.id) }, "Cancel"))))))
    : null);
}

async function cancel(button, id) {
  button.disabled = true;
  try {
    await post(`/api/inflight/${encodeURIComponent(id)}/cancel`);
  } catch (err) {
    button.disabled = false;
    button.title = err.message;
  }
}

async function askWhatIf(model) {
  const out = view.whatifOut;
  if (!model) {
    view.whatif = null;
    clear(out);
    paint();
    return;
  }
  try {
    const d = await getJSON(`/api/plan?model=${encodeURIComponent(model)}`);
    view.whatif = d;
    clear(out, h("p", { id: "whatif-answer" }, d.explanation || ""),
      h("dl", { class: "kv small" },
        h("dt", {}, "would stop"), h("dd", {}, names(d.evict)),
        h("dt", {}, "would run"), h("dd", {}, names(d.target_set)),
        h("dt", {}, "cost"), h("dd", {}, String(d.cost))),
      d.candidates && d.candidates.length > 1 ? h("div", { class: "small" }, h("div", { class: "muted" }, "Candidates, best first:"),
        h("ul", {}, d.candidates.map((c) => h("li", {}, `${c.set}: [${c.combination.join(", ")}], cost ${c.cost}`)))) : null);
  } catch (err) {
    view.whatif = null;
    clear(out, h("p", { class: "error" }, err.message));
  }
  paint();
}

export default {
  title: "Live",
  async mount(root, ctx) {
    view = { models: ctx.latest.modelStatus, queue: ctx.latest.queue, swaps: [] };
    view.svgBox = h("div", { class: "graph-box" });
    view.runningText = h("p", { class: "small", id: "running-set" });
    view.swapsBox = h("div", { id: "swaps" });
    view.queueBox = h("div", { id: "queue" });
    view.flightBox = h("div", { id: "inflight" });
    view.requestsBox = h("div", { id: "inflight-requests" });
    view.inflight = ctx.latest.inflight;
    view.whatifOut = h("div", { id: "whatif-out", class: "stack" });
    const input = h("input", { id: "whatif-model", list: "whatif-models", placeholder: "model or alias" });
    const options = h("datalist", { id: "whatif-models" });
    const form = h("form", { class: "row", id: "whatif-form", onsubmit: (e) => { e.preventDefault(); askWhatIf(input.value.trim()); } },
      input, options, h("button", { class: "primary", type: "submit" }, "What if?"),
      h("button", { type: "button", onclick: () => { input.value = ""; askWhatIf(""); } }, "Clear"));
    root.append(h("h1", {}, "Live"), h("div", { class: "grid live" },
      h("div", { class: "panel" }, h("h2", {}, "What can run together"),
        h("div", { class: "legend" }, h("span", {}, h("i", { class: "running" }), "running"),
          h("span", {}, h("i", { class: "loading" }), "loading"), h("span", {}, h("i", { class: "stopping" }), "stopping"),
          h("span", {}, h("i", { class: "target" }), "what-if target"),
          h("span", {}, h("i", { class: "evict" }), "would stop")),
        view.runningText, view.svgBox, h("p", { class: "muted small", id: "graph-notes" })),
      h("div", { class: "stack" },
        h("div", { class: "panel" }, h("h2", {}, "What if a request came in for…"), form, view.whatifOut),
        h("div", { class: "panel" }, h("h2", {}, "Swaps in progress"), view.swapsBox),
        h("div", { class: "panel" }, h("h2", {}, "Queue"), view.queueBox),
        h("div", { class: "panel" }, h("h2", {}, "In flight"), view.flightBox, view.requestsBox))));
    ctx.on("inflight", () => {
      view.inflight = ctx.latest.inflight; // app.js keeps the table (a snapshot replaces it)
      drawRequests();
    });
    drawRequests();
    ctx.on("modelStatus", (data) => {
      view.models = data;
      paint();
    });
    ctx.on("queue", (data) => {
      view.queue = data;
      view.swaps = data.swaps;
      drawQueue();
      paint();
    });
    ctx.on("decision", () => {
      if (view.whatif) askWhatIf(view.whatif.request);
    });
    ctx.every(250, () => {
      for (const td of view.swapsBox.querySelectorAll("td.elapsed")) {
        td.textContent = fmtSeconds((Date.now() - Date.parse(td.dataset.started)) / 1000);
      }
    });
    const mine = view;
    const [graph, status, queue] = await Promise.all([getJSON("/api/graph"), getJSON("/api/models"), getJSON("/api/live")]);
    if (view !== mine) return; // left the page meanwhile
    view.graph = graph;
    view.models = view.models || status.models;
    if (!view.queue) {
      view.queue = queue;
      view.swaps = queue.swaps;
    }
    for (const m of status.models) {
      options.append(h("option", { value: m.id }));
      for (const a of m.aliases || []) options.append(h("option", { value: a }));
    }
    document.getElementById("graph-notes").textContent = [`engine: ${graph.engine}`, ...graph.notes].join(" · ");
    drawGraph();
    drawQueue();
  },
  unmount() {
    view = null;
  },
};
