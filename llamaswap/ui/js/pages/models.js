// Models: every model with its state and time in state, aliases, TTL, last decision, and
// load/unload buttons; a ready model links to its own server (/upstream/<id>/, where
// GET /upstream redirects here). Kept current by `modelStatus` events.

import { getJSON, post } from "../api.js";
import { badge, clear, fmtSeconds, h } from "../dom.js";

let rows = [];
let body = null;
let note = null;

function since(model) {
  return model.state_since ? (Date.now() - Date.parse(model.state_since)) / 1000 : null;
}

async function act(button, path, label) {
  button.disabled = true;
  note.textContent = `${label}…`;
  try {
    await post(path);
    note.textContent = `${label}: done`;
  } catch (err) {
    note.textContent = `${label}: ${err.message}`;
  } finally {
    button.disabled = false;
  }
}

// A peer's model runs on another server: requests for it are forwarded there, with no swap here.
function peerRow(m) {
  return h("tr", { dataset: { model: m.id, state: m.state } },
    h("td", {}, h("strong", {}, m.id), h("div", { class: "muted small peer" }, `on peer ${m.peerID}`)),
    h("td", {}, badge(m.state)),
    h("td", { class: "num since" }, ""),
    h("td", {}, h("span", { class: "muted" }, "–")),
    h("td", { class: "num" }, ""),
    h("td", { class: "num" }, ""),
    h("td", { class: "small muted" }, "forwarded to the peer; nothing runs here"),
    h("td", {}));
}

function draw() {
  if (!body) return;
  clear(body, rows.length ? rows.map((m) => {
    if (m.peerID) return peerRow(m);
    const id = encodeURIComponent(m.id).replace(/%2F/g, "/");
    const stopped = m.state === "stopped";
    return h("tr", { dataset: { model: m.id, state: m.state } },
      h("td", {}, h("strong", {}, m.id), m.name ? h("div", { class: "muted small" }, m.name) : null,
        m.state === "ready" ? h("a", { class: "upstream small", href: `/upstream/${id}/`, target: "_blank", rel: "noopener" }, "upstream ↗") : null),
      h("td", {}, badge(m.state)),
      h("td", { class: "num since" }, fmtSeconds(since(m))),
      h("td", {}, m.aliases && m.aliases.length ? m.aliases.join(", ") : h("span", { class: "muted" }, "–")),
      h("td", { class: "num" }, m.ttl ? `${m.ttl} s` : "never"),
      h("td", { class: "num" }, m.pid ?? ""),
      h("td", { class: "small" }, m.last_decision ? m.last_decision.explanation : h("span", { class: "muted" }, "–")),
      h("td", { class: "row" },
        h("button", { class: "load", disabled: !stopped, onclick: (e) => act(e.target, `/api/models/load/${id}`, `load ${m.id}`) }, "Load"),
        h("button", { class: "unload", disabled: stopped, onclick: (e) => act(e.target, `/api/models/unload/${id}`, `unload ${m.id}`) }, "Unload")));
  }) : h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No models.")));
}

export default {
  title: "Models",
  async mount(root, ctx) {
    body = h("tbody");
    note = h("span", { class: "muted small", id: "models-note" });
    root.append(h("div", { class: "row spread" }, h("h1", {}, "Models"),
      h("div", { class: "row" }, note,
        h("button", { onclick: (e) => act(e.target, "/api/models/unload", "unload all") }, "Unload all"))),
      h("div", { class: "panel" }, h("table", { id: "models" },
        h("thead", {}, h("tr", {}, ["Model", "State", "In state", "Aliases", "TTL", "PID", "Last decision", ""]
          .map((t, i) => h("th", { class: [2, 4, 5].includes(i) ? "num" : "" }, t)))),
        body)));
    let fresh = false; // an event newer than the fetch below
    ctx.on("modelStatus", (data) => {
      fresh = true;
      rows = data;
      draw();
    });
    ctx.every(1000, () => {
      for (const tr of body.querySelectorAll("tr[data-model]")) {
        const m = rows.find((r) => r.id === tr.dataset.model);
        if (m) tr.querySelector(".since").textContent = fmtSeconds(since(m));
      }
    });
    const got = (await getJSON("/api/models")).models;
    if (!fresh) {
      rows = got;
      draw();
    }
  },
  unmount() {
    body = null;
  },
};
