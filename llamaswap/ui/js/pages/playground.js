// Playground: chat with a model, streamed. While the model loads, the server's loading-state
// stream (`reasoning_content` chunks, with sendLoadingState) is shown above the reply.

import { call, getJSON, sseEvents } from "../api.js";
import { clear, fmtRate, h } from "../dom.js";

let view = null;

function bubble(role, text) {
  return h("div", { class: ["msg", role] }, h("span", { class: "role" }, role), h("span", { class: "content" }, text));
}

async function send() {
  const text = view.input.value.trim();
  const model = view.model.value;
  if (!text || !model || view.controller) return;
  view.history.push({ role: "user", content: text });
  view.input.value = "";
  view.chat.append(bubble("user", text));
  const side = h("div", { class: "loading", hidden: true });
  const content = h("span", { class: "content" });
  const reply = h("div", { class: "msg assistant" }, h("span", { class: "role" }, model), side, content);
  view.chat.append(reply);
  view.status.textContent = "waiting for the model…";
  const controller = new AbortController();
  view.controller = controller;
  view.sendButton.disabled = true;
  view.stopButton.disabled = false;
  const started = performance.now();
  let answer = "";
  let timings = null;
  try {
    const resp = await call("/v1/chat/completions", {
      method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ model, stream: true, messages: view.history, stream_options: { include_usage: true } }),
    });
    if (!resp.ok) {
      const body = await resp.text();
      let message = body;
      try { message = JSON.parse(body).error.message; } catch { /* plain text */ }
      throw new Error(`HTTP ${resp.status}: ${message}`);
    }
    for await (const { data } of sseEvents(resp)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      // An error frame (a failed start, an unload, an upstream that broke off) ends the reply.
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      if (chunk.timings) timings = chunk.timings;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (!delta) continue;
      if (delta.reasoning_content) {
        side.hidden = false;
        side.append(delta.reasoning_content);
        view.status.textContent = "the model is loading…";
      }
      if (delta.content) {
        answer += delta.content;
        content.textContent = answer;
        view.status.textContent = "streaming…";
      }
    }
    view.history.push({ role: "assistant", content: answer });
    const secs = (performance.now() - started) / 1000;
    view.status.textContent = `done in ${secs.toFixed(2)} s` + (timings ? `, ${timings.predicted_n} tokens at ${fmtRate(timings.predicted_per_second)} tokens/s` : "");
    reply.dataset.done = "true";
  } catch (err) {
    view.status.textContent = err.name === "AbortError" ? "stopped" : `error: ${err.message}`;
    reply.dataset.done = "error";
  } finally {
    if (view) {
      view.controller = null;
      view.sendButton.disabled = false;
      view.stopButton.disabled = true;
    }
  }
}

export default {
  title: "Playground",
  async mount(root) {
    view = { history: [], controller: null };
    view.model = h("select", { id: "play-model" });
    view.chat = h("div", { class: "chat", id: "chat" });
    view.input = h("textarea", { id: "play-input", rows: 3, placeholder: "Say something (Ctrl+Enter sends)",
      onkeydown: (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(); } });
    view.status = h("span", { class: "muted small", id: "play-status" });
    view.sendButton = h("button", { class: "primary", id: "play-send", onclick: send }, "Send");
    view.stopButton = h("button", { id: "play-stop", disabled: true, onclick: () => view.controller && view.controller.abort() }, "Stop");
    root.append(h("div", { class: "row spread" }, h("h1", {}, "Playground"),
      h("div", { class: "row" }, h("label", { class: "row" }, "Model", view.model),
        h("button", { onclick: () => { view.history = []; clear(view.chat); view.status.textContent = ""; } }, "New chat"))),
    h("div", { class: "panel stack" }, view.chat, view.input, h("div", { class: "row spread" }, view.status, h("div", { class: "row" }, view.stopButton, view.sendButton))));
    const mine = view;
    const models = (await getJSON("/api/models")).models;
    if (view !== mine) return;
    for (const m of models.filter((x) => !x.unlisted)) view.model.append(h("option", { value: m.id }, m.name ? `${m.id} — ${m.name}` : m.id));
  },
  unmount() {
    if (view && view.controller) view.controller.abort();
    view = null;
  },
};
