// The shell: one page at a time under /ui/<page>, one live feed shared by every page.

import { subscribe } from "./api.js";
import { clear, h } from "./dom.js";
import models from "./pages/models.js";
import live from "./pages/live.js";
import decisions from "./pages/decisions.js";
import activity from "./pages/activity.js";
import logs from "./pages/logs.js";
import playground from "./pages/playground.js";
import config from "./pages/config.js";

const PAGES = { models, live, decisions, activity, logs, playground, config };
const listeners = new Map(); // event type -> Set of callbacks

// The latest of each snapshot-style event, so a page mounted later starts from it.
export const latest = { modelStatus: null, queue: null, inflight: new Map() };

const profile = document.getElementById("profile");

function emit(type, data) {
  if (type === "profileChanged") {
    profile.textContent = data.active ? `profile: ${data.active}` : "";
    profile.hidden = !data.active;
  }
  if (type === "modelStatus") latest.modelStatus = data;
  else if (type === "queue") latest.queue = data;
  else if (type === "inflight") {
    if (data.operation === "snapshot") {
      latest.inflight = new Map((data.requests || []).map((r) => [r.id, r]));
    } else if (data.operation === "upsert") latest.inflight.set(data.request.id, data.request);
    else if (data.operation === "remove") latest.inflight.delete(data.id);
  }
  for (const fn of listeners.get(type) || []) {
    try {
      fn(data);
    } catch (err) {
      console.warn(`handler for ${type} failed`, err);
    }
  }
}

let current = null;

function pageName() {
  const rest = location.pathname.replace(/^\/ui\/?/, "").split("/")[0];
  return PAGES[rest] ? rest : "models";
}

function render() {
  const name = pageName();
  if (current) {
    for (const off of current.offs) off();
    if (current.page.unmount) current.page.unmount();
  }
  const main = document.getElementById("main");
  const offs = [];
  const ctx = {
    on(type, fn) {
      if (!listeners.has(type)) listeners.set(type, new Set());
      listeners.get(type).add(fn);
      offs.push(() => listeners.get(type).delete(fn));
    },
    every(ms, fn) {
      const id = setInterval(fn, ms);
      offs.push(() => clearInterval(id));
    },
    latest,
    go,
  };
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  document.title = `llamaswap · ${PAGES[name].title}`;
  const root = h("section", { class: "page", id: `page-${name}` });
  clear(main, root);
  current = { page: PAGES[name], offs };
  Promise.resolve(PAGES[name].mount(root, ctx)).catch((err) => {
    root.append(h("p", { class: "error" }, `Could not load this page: ${err.message}`));
  });
}

export function go(path) {
  if (location.pathname !== path) history.pushState({}, "", path);
  render();
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-nav]");
  if (!a || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", render);

const feed = document.getElementById("feed");
subscribe(emit, (on) => {
  feed.textContent = on ? "live" : "offline";
  feed.className = `feed ${on ? "on" : "off"}`;
  document.body.dataset.feed = on ? "on" : "off";
});
render();
