// Opening the settings window from the dashboard.

import { invoke } from "/keyside/bridge.js";

// Shown when browser mode found no browser to start and printed the one-time link on
// keyside's stdout instead. The link itself never goes into a page.
const LINK_IN_TERMINAL_TEXT = "Open the link keyside printed in the terminal to open Settings.";

/**
 * Ask the host to open (or focus) the settings window. When the host printed a link in the
 * terminal instead of opening a window (opened_in "terminal"), `notice` shows a message that
 * points the user to that link.
 * A host without an open_window command gets a fallback: the settings page's own URL when
 * app_config lists one, else a message in `notice` that shows the user where the settings are.
 * (Browser mode serves each window on its own origin, so the settings page has a URL of its
 * own.) `windows` is the Map from readAppConfig.
 */
export async function openSettings(windows, notice) {
  try {
    const result = await invoke("open_window", { label: "settings" });
    if (result?.opened_in === "terminal") {
      showNotice(notice, LINK_IN_TERMINAL_TEXT);
    }
    return;
  } catch (error) {
    if (error?.reason !== "unknown_command") {
      showNotice(notice, `The settings window could not be opened (reason: ${error?.reason || "unknown"}).`);
      return;
    }
  }
  const url = windows.get("settings")?.url;
  if (typeof url === "string" && /^http:\/\/(127\.0\.0\.1|localhost|\[::1\])[:/]/.test(url)) {
    window.open(url, "keyside-settings", "noopener");
    return;
  }
  showNotice(notice, "Open the settings window to add API keys; run `keyside secrets set NAME` as an alternative.");
}

function showNotice(notice, text) {
  notice.textContent = text;
  notice.hidden = false;
}
