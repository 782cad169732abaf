// Decisions: every committed swap, newest first: what was asked, what ran, what was stopped
// and why, the runner-up candidates with their costs, waits and load time.

import { getJSON } from "../api.js";
import { badge, clear, fmtDateTime, fmtSeconds, h, names } from "../dom.js";

let list = null;
let records = [];

function card(d) {
  const waited = d.waited && d.waited.length
    ? `${d.waited.length} request${d.waited.length > 1 ? "s" : ""} waited (longest ${fmtSeconds(Math.max(...d.waited))})`
    : "no request waited";
  return h("div", { class: "card", dataset: { id: d.id, model: d.model } },
    h("div", { class: "head" }, h("strong", {}, d.model), badge(d.status === "ok" ? "ok" : d.status, d.status),
      h("span", { class: "muted small" }, fmtDateTime(d.time)),
      d.requested !== d.model ? h("span", { class: "muted small" }, `asked as ${d.requested}`) : null),
    h("p", { class: "explanation" }, d.explanation || ""),
    h("dl", { class: "kv small" },
      h("dt", {}, "running before"), h("dd", {}, names(d.running_before)),
      h("dt", {}, "stopped"), h("dd", {}, d.evicted.length ? `${names(d.evicted)} (eviction cost ${d.cost})` : "nothing"),
      h("dt", {}, "runs now"), h("dd", {}, names(d.target_set)),
      h("dt", {}, "rule"), h("dd", {}, d.rule + (d.set ? ` · set ${d.set}${d.dsl ? ` (${d.dsl})` : ""}` : "")),
      h("dt", {}, "load"), h("dd", {}, d.load_seconds === null ? "loading…" : `${fmtSeconds(d.load_seconds)}; ${waited}`),
      d.error ? [h("dt", {}, "error"), h("dd", { class: "error" }, d.error)] : null),
    d.candidates && d.candidates.length ? h("div", { class: "small" }, h("span", { class: "muted" }, "Not chosen:"),
      h("ul", {}, d.candidates.map((c) => h("li", {},
        `${c.set}: would run [${c.combination.join(", ")}] at eviction cost ${c.cost}`
        + (c.cost > d.cost ? ` (${c.cost - d.cost} more)` : c.cost === d.cost ? " (same cost, defined later)" : ""))))) : null);
}

function draw() {
  if (!list) return;
  clear(list, records.length ? records.map(card) : h("p", { class: "empty" }, "No swap yet: decisions appear here when a request needs a model to start."));
}

export default {
  title: "Decisions",
  async mount(root, ctx) {
    list = h("div", { class: "cards", id: "decisions" });
    root.append(h("h1", {}, "Decisions"), h("div", { class: "panel" }, list));
    const early = [];
    let loaded = false;
    ctx.on("decision", (d) => {
      if (!loaded) return early.push(d);
      records = [d, ...records.filter((r) => r.id !== d.id)].slice(0, 200);
      draw();
    });
    records = (await getJSON("/api/decisions?limit=100")).decisions;
    loaded = true;
    for (const d of early) records = [d, ...records.filter((r) => r.id !== d.id)];
    draw();
  },
  unmount() {
    list = null;
  },
};
