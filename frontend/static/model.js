// Data access: fetching, caching and stale-response guards. No DOM.

/** An HTTP or network failure, with a message a user can act on. */
export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

/** "series?run=a&variable=x&variable=y": arrays become repeated parameters. */
export function routeUrl(route, params = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null) continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(key, String(item));
  }
  const text = search.toString();
  return text ? `${route}?${text}` : route;
}

async function readJson(fetchImpl, url) {
  let response;
  try {
    response = await fetchImpl(url, { headers: { Accept: "application/json" } });
  } catch (err) {
    throw new ApiError(`Could not reach TensorBoard (${err?.message || err}). Is it still running?`);
  }
  let body = null;
  let text = "";
  try {
    text = await response.text();
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && typeof body.error === "string" ? body.error : text.slice(0, 200) || response.statusText;
    throw new ApiError(`The server answered ${response.status} for ${url.split("?")[0]}: ${detail}`, response.status);
  }
  if (body === null || typeof body !== "object") {
    throw new ApiError(`The server sent something that is not JSON for ${url.split("?")[0]}.`, response.status);
  }
  return body;
}

/**
 * A client of the plugin's routes (docs/HTTP_API.md).
 *
 * Args:
 *   base: URL prefix of the routes ("" when the document's base is the plugin's).
 *   fetchImpl: fetch, replaceable in tests.
 *
 * Responses are cached by URL until `clear()` (called when TensorBoard reloads);
 * a failed request is not cached, so a retry asks again.
 */
export function createClient({ base = "", fetchImpl = (...args) => globalThis.fetch(...args) } = {}) {
  const cache = new Map();
  function get(route, params) {
    const url = base + routeUrl(route, params);
    if (!cache.has(url)) {
      const promise = readJson(fetchImpl, url);
      cache.set(url, promise);
      promise.catch(() => cache.delete(url));
    }
    return cache.get(url);
  }
  return {
    runs: () => get("runs"),
    variables: (run, tag) => get("variables", { run, tag }),
    // By row index: names may repeat or be "" (docs/HTTP_API.md, `by_index`).
    series: (run, tag, indices) => get("series", { run, tag, index: indices }),
    heatmap: (run, tag, buckets) => get("heatmap", { run, tag, buckets }),
    compare: (tag, runs) => get("compare", { tag, run: runs }),
    vocabulary: () => get("vocabulary"),
    clear: () => cache.clear(),
  };
}

/**
 * Keeps only the newest request of each slot: when the user picks another
 * run before the previous run's answer arrives, the old answer is dropped
 * instead of being drawn over the new selection.
 */
export function createLatest() {
  const tokens = new Map();
  return async function latest(slot, promise) {
    const token = (tokens.get(slot) || 0) + 1;
    tokens.set(slot, token);
    try {
      const value = await promise;
      return tokens.get(slot) === token ? { stale: false, value } : { stale: true };
    } catch (error) {
      if (tokens.get(slot) !== token) return { stale: true };
      throw error;
    }
  };
}

/** Whether a response belongs to the selection it is about to be drawn for. */
export function matchesSelection(response, selection) {
  if (!response || typeof response !== "object") return false;
  for (const key of ["run", "tag"]) {
    if (key in selection && key in response && response[key] !== selection[key]) return false;
  }
  return true;
}
