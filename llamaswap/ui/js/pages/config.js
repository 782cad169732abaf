// Config: the compiled plan in brief (engine, models, sets or groups, preload), its
// diagnostics, and when the config was loaded or last reloaded.

import { getJSON } from "../api.js";
import { clear, fmtDateTime, h, names } from "../dom.js";

export default {
  title: "Config",
  async mount(root) {
    const c = await getJSON("/api/config");
    const diag = c.diagnostics.length ? h("table", { id: "diagnostics" }, h("thead", {}, h("tr", {},
      ["Severity", "Code", "Where", "Message"].map((t) => h("th", {}, t)))),
    h("tbody", {}, c.diagnostics.map((d) => h("tr", {}, h("td", {}, d.severity), h("td", { class: "mono" }, d.code),
      h("td", { class: "mono small" }, [d.file, d.line, d.column].filter((x) => x !== null && x !== undefined).join(":")),
      h("td", {}, d.message, d.hint ? h("div", { class: "muted small" }, d.hint) : null)))))
      : h("p", { class: "empty" }, "No diagnostics: the config compiled cleanly.");
    const sets = c.engine === "matrix"
      ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Set"), h("th", {}, "Expression"), h("th", { class: "num" }, "Combinations"))),
        h("tbody", {}, c.sets.map((st) => h("tr", {}, h("td", {}, st.name), h("td", { class: "mono" }, st.dsl),
          h("td", { class: "num" }, st.combinations === null ? "symbolic" : st.combinations.length)))))
      : h("table", {}, h("thead", {}, h("tr", {}, ["Group", "Members", "swap", "exclusive", "persistent"].map((t) => h("th", {}, t)))),
        h("tbody", {}, c.groups.map((g) => h("tr", {}, h("td", {}, g.name), h("td", {}, names(g.members)),
          h("td", {}, String(g.swap)), h("td", {}, String(g.exclusive)), h("td", {}, String(g.persistent))))));
    clear(root, h("h1", {}, "Config"), h("div", { class: "grid two" },
      h("div", { class: "panel" }, h("h2", {}, "Plan"), h("dl", { class: "kv", id: "plan-summary" },
        h("dt", {}, "file"), h("dd", { class: "mono" }, c.file),
        h("dt", {}, "engine"), h("dd", {}, c.engine),
        h("dt", {}, "models"), h("dd", {}, String(c.models.length)),
        h("dt", {}, "preload"), h("dd", {}, names(c.preload)),
        h("dt", {}, "API keys"), h("dd", {}, c.api_keys ? "required" : "not required"),
        h("dt", {}, "activity store"), h("dd", { class: "small" }, c.store.persistent ? c.store.path : c.store.degraded ? `memory only (${c.store.degraded})` : "memory only"),
        h("dt", {}, "loaded"), h("dd", {}, fmtDateTime(c.loaded_at)),
        h("dt", {}, "last reload"), h("dd", { id: "last-reload" }, c.last_reload ? `${fmtDateTime(c.last_reload.time)}: ${c.last_reload.outcome}`
          + (c.last_reload.summary ? ` (${c.last_reload.summary})` : "") + (c.last_reload.error ? ` — ${c.last_reload.error}` : "")
          : "none since start"))),
      h("div", { class: "panel" }, h("h2", {}, "Diagnostics"), diag)),
    h("div", { class: "panel", style: "margin-top:14px" }, h("h2", {}, c.engine === "matrix" ? "Sets" : "Groups"), sets),
    h("div", { class: "panel", style: "margin-top:14px" }, h("h2", {}, "Models"), h("table", {},
      h("thead", {}, h("tr", {}, ["Model", "Aliases", "TTL", c.engine === "matrix" ? "Evict cost" : "Group", "Priority", "Concurrency"].map((t) => h("th", {}, t)))),
      h("tbody", {}, c.models.map((m) => h("tr", {}, h("td", {}, m.id), h("td", {}, m.aliases.join(", ") || "–"),
        h("td", {}, m.ttl ? `${m.ttl} s` : "never"), h("td", {}, c.engine === "matrix" ? String(m.evict_cost) : m.group || "–"),
        h("td", {}, String(m.priority)), h("td", {}, String(m.concurrency_limit))))))));
  },
};
