// The link to the TensorBoard page around this iframe: reload notices over
// its MessagePort protocol, and its dark mode. Everything here is optional:
// standalone (or in a future TensorBoard) the dashboard still works.

const PROTOCOL = "experimental";

/**
 * Opens the plugin channel the way TensorBoard's plugin_util guest does: post
 * "experimental.bootstrap" to the parent with one end of a MessageChannel; the
 * host then sends JSON strings {type, id, payload, error, isReply} over it and
 * waits for a reply to each.
 *
 * Args:
 *   handlers: {messageType: (payload) => result}, e.g. "experimental.DataReloaded".
 *
 * Returns:
 *   {request(type, payload) -> Promise} to ask the host something, or null.
 */
export function connectHost(handlers) {
  if (window.parent === window || typeof MessageChannel !== "function") return null;
  const channel = new MessageChannel();
  const port = channel.port1;
  const waiting = new Map();
  let nextId = 0;
  port.addEventListener("message", async (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return; // not this protocol
    }
    if (!message || typeof message !== "object") return;
    if (message.isReply) {
      const wait = waiting.get(message.id);
      waiting.delete(message.id);
      if (wait) (message.error ? wait.reject(new Error(message.error)) : wait.resolve(message.payload));
      return;
    }
    let payload = null;
    let error = null;
    const handler = handlers[message.type];
    try {
      if (handler) payload = (await handler(message.payload)) ?? null;
    } catch (err) {
      error = String(err?.message || err);
    }
    // The host awaits a reply to every message; answer even the unknown ones.
    port.postMessage(JSON.stringify({ type: message.type, id: message.id, payload, error, isReply: true }));
  });
  port.start();
  try {
    window.parent.postMessage(`${PROTOCOL}.bootstrap`, "*", [channel.port2]);
  } catch {
    return null;
  }
  return {
    request(type, payload = null, timeoutMs = 2000) {
      const id = nextId++;
      port.postMessage(JSON.stringify({ type, id, payload, error: null, isReply: false }));
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        setTimeout(() => {
          if (waiting.delete(id)) reject(new Error(`no answer to ${type}`));
        }, timeoutMs);
      });
    },
  };
}

/**
 * Follows TensorBoard's theme: the host toggles `dark-mode` on its body
 * (already folding in the browser default), which a same-origin iframe can
 * watch. Without a readable host, `prefers-color-scheme` decides.
 *
 * Args:
 *   apply: called with true (dark) or false now and on every change.
 */
export function followTheme(apply) {
  let hostBody = null;
  try {
    if (window.parent !== window) hostBody = window.parent.document.body;
  } catch {
    hostBody = null; // cross-origin parent: fall back to the media query
  }
  const media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  let last = null;
  const update = () => {
    const dark = hostBody ? hostBody.classList.contains("dark-mode") : Boolean(media?.matches);
    if (dark !== last) {
      last = dark;
      apply(dark);
    }
  };
  if (hostBody) new MutationObserver(update).observe(hostBody, { attributes: true, attributeFilter: ["class"] });
  media?.addEventListener?.("change", update);
  update();
}
