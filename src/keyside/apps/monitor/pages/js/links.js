// Links to other sites open in the system browser through the host's open_external command;
// the app window itself never navigates away from the app's origin.

import { invoke } from "/keyside/bridge.js";
import { el } from "./dom.js";

/**
 * Create an <a> for an http(s) `url` that opens in the system browser when activated.
 * `onError(error)` receives a failure of the open_external command.
 */
export function externalLink(url, text, { className = "", onError = reportOpenError } = {}) {
  const link = el("a", { className, text, attrs: { href: url, rel: "noopener noreferrer" } });
  link.addEventListener("click", (event) => {
    event.preventDefault();
    invoke("open_external", { url }).catch(onError);
  });
  return link;
}

function reportOpenError(error) {
  console.warn(`open_external failed: reason=${error?.reason || "unknown"}`);
}
