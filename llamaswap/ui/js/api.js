// Talking to the server: every call carries the API key (when one is set), a 401 asks for
// the key once and retries, and the live feed is read with fetch (EventSource cannot send
// an Authorization header, and a key in the URL would end up in logs).

const KEY = "llamaswap.apiKey";
let asking = null;

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

function withKey(extra) {
  const headers = new Headers(extra || {});
  headers.set("X-Requested-With", "llamaswap-ui"); // a 401 then comes without a Basic challenge
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

// Show the key dialog (once, however many calls are waiting) and resolve when a key is entered.
function askKey(refused) {
  if (asking) return asking;
  asking = new Promise((resolve) => {
    const dialog = document.getElementById("key-dialog");
    const form = document.getElementById("key-form");
    const input = document.getElementById("key-input");
    const error = document.getElementById("key-error");
    error.hidden = !refused;
    error.textContent = refused ? "That key was refused; try another." : "";
    input.value = "";
    const done = (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      localStorage.setItem(KEY, key);
      form.removeEventListener("submit", done);
      dialog.close();
      asking = null;
      resolve();
    };
    form.addEventListener("submit", done);
    dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
    dialog.showModal();
    input.focus();
  });
  return asking;
}

export async function call(path, options = {}) {
  for (;;) {
    const sent = apiKey();
    const resp = await fetch(path, { ...options, headers: withKey(options.headers) });
    if (resp.status !== 401) return resp;
    // Another call may have stored a new key meanwhile: retry with it before asking.
    if (apiKey() !== sent) continue;
    await askKey(Boolean(sent));
  }
}

async function errorText(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    return body?.error?.message || text;
  } catch {
    return text || resp.statusText;
  }
}

export async function getJSON(path) {
  const resp = await call(path, { headers: { Accept: "application/json" } });
  if (!resp.ok) throw new ApiError(resp.status, await errorText(resp));
  return resp.json();
}

export async function post(path, body) {
  const options = { method: "POST", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const resp = await call(path, options);
  if (!resp.ok) throw new ApiError(resp.status, await errorText(resp));
  return resp;
}

// Split a text stream into SSE events: yields {event, data} as they complete.
export async function* sseEvents(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let rest = colon < 0 ? "" : line.slice(colon + 1);
        if (rest.startsWith(" ")) rest = rest.slice(1);
        if (field === "event") event = rest;
        else if (field === "data") data.push(rest);
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

// Read a streamed text body line by line (the log tails).
export async function* lines(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      if (buffer) yield buffer;
      return;
    }
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
    }
  }
}

// The live feed (/api/events): calls onEvent(type, data) for every event, reconnects with
// back-off, reports connected/disconnected through onState. Returns a stop function.
export function subscribe(onEvent, onState) {
  let stopped = false;
  let controller = null;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  (async () => {
    let delay = 500;
    while (!stopped) {
      try {
        controller = new AbortController();
        const resp = await call("/api/events", { signal: controller.signal, headers: { Accept: "text/event-stream" } });
        if (!resp.ok) throw new ApiError(resp.status, "events");
        onState(true);
        delay = 500;
        for await (const { data } of sseEvents(resp)) {
          const envelope = JSON.parse(data);
          onEvent(envelope.type, JSON.parse(envelope.data));
        }
      } catch (err) {
        if (stopped) return;
      }
      onState(false);
      await sleep(delay);
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => {
    stopped = true;
    if (controller) controller.abort();
  };
}
