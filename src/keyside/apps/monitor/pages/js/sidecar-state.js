// The "Local API" indicator: the sidecar's state from runtime_info, kept current through the
// bridge's onSidecarState notifications when the bridge offers them.

import { invoke } from "/keyside/bridge.js";

const LABELS = {
  ready: "Local API ready",
  starting: "Local API starting…",
  restarting: "Local API restarting…",
  failed: "Local API failed",
  unreachable: "Local API unreachable",
  unknown: "Local API state unknown",
};

/** Render a sidecar state ({state, reason} or a state name) into `node`. */
export function renderSidecarState(node, value) {
  const state = typeof value === "string" ? value : value?.state || "unknown";
  const reason = typeof value === "object" && value ? value.reason : "";
  node.dataset.state = state;
  node.textContent = LABELS[state] || `Local API: ${state}`;
  node.title = reason ? `reason: ${reason}` : "";
}

/** Show the current sidecar state in `node` and follow changes through `subscribe`. */
export async function showSidecarState(node, subscribe) {
  try {
    const info = await invoke("runtime_info", {});
    renderSidecarState(node, info?.sidecar);
  } catch (error) {
    renderSidecarState(node, { state: "unknown", reason: error?.reason || "" });
  }
  if (typeof subscribe === "function") {
    subscribe((value) => renderSidecarState(node, value));
  }
}
