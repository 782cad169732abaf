// Logs: llamaswap's own log (proxy), every upstream's output (upstream), or one model's,
// history first and then live, from /logs/stream/<which>.

import { call, getJSON, lines } from "../api.js";
import { clear, h } from "../dom.js";

const MAX_LINES = 3000;
let view = null;

async function follow(which) {
  if (view.controller) view.controller.abort();
  const controller = new AbortController();
  view.controller = controller;
  for (const b of view.tabs.querySelectorAll("button")) b.classList.toggle("active", b.dataset.which === which);
  const pre = view.pre;
  clear(pre);
  pre.dataset.which = which;
  let count = 0;
  try {
    const resp = await call(`/logs/stream/${which.split("/").map(encodeURIComponent).join("/")}`, { signal: controller.signal });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    for await (const line of lines(resp)) {
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
      pre.append(`${line}\n`);
      if (++count > MAX_LINES) {
        pre.firstChild.remove();
        count--;
      }
      if (stick) pre.scrollTop = pre.scrollHeight;
    }
  } catch (err) {
    if (err.name !== "AbortError" && view && view.controller === controller) pre.append(`[log stream ended: ${err.message}]\n`);
  }
}

export default {
  title: "Logs",
  async mount(root) {
    view = { controller: null };
    view.tabs = h("div", { class: "tabs", id: "log-tabs" });
    view.pre = h("pre", { class: "log", id: "log" });
    root.append(h("h1", {}, "Logs"), h("div", { class: "panel" }, view.tabs, view.pre));
    const mine = view;
    const models = (await getJSON("/api/models")).models;
    if (view !== mine) return;
    const tab = (which, label) => h("button", { dataset: { which }, onclick: () => follow(which) }, label);
    view.tabs.append(tab("proxy", "llamaswap"), tab("upstream", "all upstreams"), ...models.map((m) => tab(m.id, m.id)));
    follow("proxy");
  },
  unmount() {
    if (view && view.controller) view.controller.abort();
    view = null;
  },
};
