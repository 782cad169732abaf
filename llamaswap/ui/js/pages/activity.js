// Activity: every request (time, model, status, wait, duration, tokens in/out, tokens/s),
// filtered by model, with charts of generation speed and wait over time. New requests
// arrive with `activity` events.

import { getJSON } from "../api.js";
import { clear, fmtCount, fmtMs, fmtRate, fmtTime, h, s } from "../dom.js";

const LIMIT = 200;
let view = null;

function chart(points, { unit, kind }) {
  const W = 560, H = 180, L = 44, R = 10, T = 12, B = 24;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", dataset: { points: points.length } });
  svg.append(s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  if (!points.length) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
    return svg;
  }
  const t0 = points[0].t, t1 = points[points.length - 1].t;
  const vmax = Math.max(...points.map((p) => p.v)) || 1;
  const x = (t) => (t1 === t0 ? (L + W - R) / 2 : L + ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => H - B - (v / vmax) * (H - T - B);
  svg.append(s("polyline", { class: ["series", kind], points: points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ") }));
  for (const p of points) svg.append(s("circle", { class: kind, cx: x(p.t), cy: y(p.v), r: 2.5 }, s("title", {}, `${p.v.toFixed(1)} ${unit}`)));
  svg.append(s("text", { x: L - 4, y: T + 4, "text-anchor": "end" }, fmtRate(vmax)),
    s("text", { x: L - 4, y: H - B, "text-anchor": "end" }, "0"),
    s("text", { x: L, y: H - 6 }, new Date(t0).toLocaleTimeString([], { hour12: false })),
    s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, new Date(t1).toLocaleTimeString([], { hour12: false })));
  return svg;
}

function row(r) {
  const ok = r.resp_status_code < 400;
  return h("tr", { dataset: { id: r.id, model: r.model } },
    h("td", {}, fmtTime(r.timestamp)),
    h("td", {}, r.model, r.requested && r.requested !== r.model ? h("span", { class: "muted small" }, ` (${r.requested})`) : null,
      r.resolution ? h("div", { class: "muted small resolution", title: "how the ID asked for was resolved" },
        [r.resolution.profile && `profile ${r.resolution.profile}`, r.resolution.selector && `selector ${r.resolution.selector}`, r.resolution.reason]
          .filter(Boolean).join(" · ")) : null),
    h("td", { class: ok ? "" : "error" }, r.resp_status_code),
    h("td", { class: "num wait" }, fmtMs(r.wait_ms)),
    h("td", { class: "num duration" }, fmtMs(r.duration_ms)),
    h("td", { class: "num tokens-in" }, fmtCount(r.tokens.input_tokens)),
    h("td", { class: "num tokens-out" }, fmtCount(r.tokens.output_tokens)),
    h("td", { class: "num" }, fmtCount(r.tokens.cache_tokens)),
    h("td", { class: "num" }, fmtRate(r.tokens.prompt_per_second)),
    h("td", { class: "num tps" }, fmtRate(r.tokens.tokens_per_second)),
    h("td", { class: "small muted" }, r.req_path),
    h("td", { class: "small muted session" }, r.session_id || ""));
}

function draw() {
  const rows = view.rows;
  clear(view.body, rows.length ? rows.map(row) : h("tr", {}, h("td", { colspan: 12, class: "empty" }, "No requests yet.")));
  const ordered = [...rows].reverse();
  clear(view.speed, chart(ordered.filter((r) => r.tokens.tokens_per_second > 0)
    .map((r) => ({ t: Date.parse(r.timestamp), v: r.tokens.tokens_per_second })), { unit: "tokens/s", kind: "speed" }));
  clear(view.wait, chart(ordered.map((r) => ({ t: Date.parse(r.timestamp), v: r.wait_ms })), { unit: "ms", kind: "wait" }));
}

function drawStats(st) {
  const gen = st.gen_histogram;
  clear(view.stats,
    h("div", {}, h("div", { class: "stat", id: "stat-requests" }, st.total_requests), h("div", { class: "muted small" }, "requests")),
    h("div", {}, h("div", { class: "stat" }, st.total_input_tokens), h("div", { class: "muted small" }, "tokens in")),
    h("div", {}, h("div", { class: "stat" }, st.total_output_tokens), h("div", { class: "muted small" }, "tokens out")),
    h("div", {}, h("div", { class: "stat" }, gen ? fmtRate(gen.p50) : "–"), h("div", { class: "muted small" }, "median tokens/s")),
    h("div", {}, h("div", { class: "stat" }, st.wait_histogram ? fmtMs(st.wait_histogram.p95) : "–"), h("div", { class: "muted small" }, "p95 wait")),
    h("div", { class: "small muted" }, st.store.persistent ? `stored in ${st.store.path}` : st.store.degraded ? `in memory only: ${st.store.degraded}` : "in memory only"));
}

async function load() {
  const mine = view;
  const model = view.filter.value;
  const q = model ? `&model=${encodeURIComponent(model)}` : "";
  const [page, stats] = await Promise.all([getJSON(`/api/metrics/activity?limit=${LIMIT - 1}${q}`), getJSON(`/api/metrics/stats?${q.slice(1)}`)]);
  if (view !== mine) return;
  view.rows = page.data;
  view.seen = new Set(page.data.map((r) => r.id));
  draw();
  drawStats(stats);
}

export default {
  title: "Activity",
  async mount(root, ctx) {
    view = { rows: [], seen: new Set() };
    view.body = h("tbody");
    view.speed = h("div", { id: "chart-speed" });
    view.wait = h("div", { id: "chart-wait" });
    view.stats = h("div", { class: "stats", id: "activity-stats" });
    view.filter = h("select", { id: "activity-model", onchange: () => load() }, h("option", { value: "" }, "all models"));
    root.append(h("div", { class: "row spread" }, h("h1", {}, "Activity"), h("label", { class: "row" }, "Model", view.filter)),
      h("div", { class: "panel" }, view.stats),
      h("div", { class: "grid two", style: "margin-top:14px" },
        h("div", { class: "panel" }, h("h2", {}, "Generation speed (tokens/s)"), view.speed),
        h("div", { class: "panel" }, h("h2", {}, "Wait for a grant (ms)"), view.wait)),
      h("div", { class: "panel", style: "margin-top:14px" }, h("table", { id: "activity" },
        h("thead", {}, h("tr", {}, ["Time", "Model", "Status", "Wait", "Duration", "In", "Out", "Cached", "Prompt t/s", "Gen t/s", "Path", "Session"]
          .map((t, i) => h("th", { class: i >= 3 && i <= 9 ? "num" : "" }, t)))), view.body)));
    ctx.on("activity", (data) => {
      const r = data.record;
      if (!r || view.seen.has(r.id)) return;
      if (view.filter.value && r.model !== view.filter.value) return;
      view.seen.add(r.id);
      view.rows = [r, ...view.rows].slice(0, LIMIT);
      draw();
      getJSON(`/api/metrics/stats?${view.filter.value ? `model=${encodeURIComponent(view.filter.value)}` : ""}`).then((st) => view && drawStats(st), () => {});
    });
    const models = (await getJSON("/api/models")).models;
    for (const m of models) view.filter.append(h("option", { value: m.id }, m.id));
    await load();
  },
  unmount() {
    view = null;
  },
};
