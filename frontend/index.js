// Entry point: TensorBoard's iframe imports this module and calls render().
// Only wiring lives here; see static/app.js (controller and store),
// static/panes/ (one module per view), static/model.js (data) and the DOM
// modules (shell.js, table.js, heatmap.js, compare.js, detail.js, charts.js).

import { createApp } from "./static/app.js";
import { PLUGIN_NAME } from "./static/constants.js";
import { el } from "./static/dom.js";
import { connectHost, followTheme } from "./static/host.js";
import { createClient } from "./static/model.js";
import { messageBox } from "./static/shell.js";
import { decodeState } from "./static/state.js";
import { setVocabulary } from "./static/vocabulary.js";

// Routes sit beside this module, so derive their URL from it: this holds
// under --path_prefix and whatever base the host document sets.
const BASE = new URL(".", import.meta.url).href;

function addStylesheet(href) {
  document.head.append(el("link", { rel: "stylesheet", href: new URL(href, BASE).href }));
}

/** The `p.varupdate.*` entries of a host hash like "#varupdate&p.varupdate.run=a". */
function pluginEntries(hash) {
  const prefix = `p.${PLUGIN_NAME}.`;
  const entries = {};
  for (const [key, value] of new URLSearchParams(String(hash).replace(/^#/, ""))) {
    if (key.startsWith(prefix)) entries[key.slice(prefix.length)] = value;
  }
  return entries;
}

/**
 * Deep links: state from the host page's URL (`#varupdate&p.varupdate.run=a`).
 * TensorBoard's `experimental.GetURLPluginData` is asked first; in 2.21 it
 * answers {} (its legacy hash store no longer sees the URL), so the parent's
 * hash, readable because the iframe is same-origin, is parsed as a fallback.
 */
async function hostUrlState(host) {
  let data = {};
  try {
    if (host) {
      data = (await Promise.race([
        host.request("experimental.GetURLPluginData", { pluginName: PLUGIN_NAME }),
        new Promise((resolve) => setTimeout(() => resolve(null), 300)),
      ])) || {};
    }
  } catch {
    data = {};
  }
  if (typeof data !== "object" || !Object.keys(data).length) {
    try {
      data = window.parent !== window ? pluginEntries(window.parent.location.hash) : {};
    } catch {
      data = {}; // cross-origin parent
    }
  }
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(data)) params.append(key, String(value));
  const parsed = decodeState(params.toString());
  return Object.fromEntries(Object.keys(data).filter((k) => k in parsed).map((k) => [k, parsed[k]]));
}

export async function render() {
  addStylesheet("static/vendor/uPlot.min.css");
  addStylesheet("static/style.css");
  const root = el("div", { className: "vu-root", id: "varupdate-root" });
  document.body.append(root);
  let app = null;
  followTheme((dark) => {
    document.documentElement.classList.toggle("vu-dark", dark);
    document.documentElement.style.colorScheme = dark ? "dark" : "light";
    app?.redrawCharts();
  });
  const handlers = {
    // TensorBoard's reload (button or timer) fired: fetch again, keep the selection.
    "experimental.DataReloaded": () => app?.reload(),
  };
  const host = connectHost(handlers);
  const client = createClient({ base: BASE });
  // The verdict words come from the plugin (verdicts/vocabulary.py), their
  // one owner; without them no verdict can be named, so a failed fetch is
  // shown as the error it is.
  let initial;
  try {
    [initial] = await Promise.all([hostUrlState(host), client.vocabulary().then(setVocabulary)]);
  } catch (err) {
    root.append(messageBox("error", "Could not load the verdict vocabulary", err.message));
    return;
  }
  app = createApp(root, client, initial);
}
