// One dashboard panel: a header, a status line for loading and failure states, and a body
// for data. The current state is kept in the section's data-state attribute, which the
// stylesheet and end-to-end tests read ("loading", "data", "missing", "invalid", ...).

import { el, role, formatClock } from "./dom.js";
import { State } from "./failure.js";

/**
 * Return {text, hint, actions} describing `failure` for a panel that uses `serviceLabel`
 * (e.g. "Finnhub") with the key named `secret` (e.g. "FINNHUB_API_KEY", or null).
 */
export function describeFailure(failure, { serviceLabel, secret }) {
  const keyName = secret || `${serviceLabel} key`;
  switch (failure.state) {
    case State.MISSING:
      return {
        text: `No ${serviceLabel} key is set.`,
        hint: `Add ${keyName} in Settings to show this panel.`,
        actions: ["settings"],
      };
    case State.INVALID:
      return {
        text: `${serviceLabel} rejected the key${failure.status ? ` (HTTP ${failure.status})` : ""}.`,
        hint: `Check or replace ${keyName} in Settings.`,
        actions: ["settings", "retry"],
      };
    case State.UNREACHABLE:
      return {
        text: `${serviceLabel} cannot be reached.`,
        hint: "This computer may be offline, or the service is down. Retrying later.",
        actions: ["retry"],
      };
    case State.BLOCKED:
      return {
        text: "keyside blocked this request.",
        hint: failure.message || "The address or path is not allowed for this service.",
        actions: ["retry"],
      };
    case State.RATE_LIMITED:
      return {
        text: `${serviceLabel} rate limit reached.`,
        hint: "Wait a minute, then retry.",
        actions: ["retry"],
      };
    case State.SIDECAR:
      return {
        text: "The local API (sidecar) is not available.",
        hint: failure.message || "keyside restarts it automatically; retry in a moment.",
        actions: ["retry"],
      };
    default:
      return {
        text: `${serviceLabel} request failed.`,
        hint: failure.message || "",
        actions: ["retry"],
      };
  }
}

export class Panel {
  /**
   * root: the panel's <section>. serviceLabel and secret name the service in messages.
   * onRetry() reloads the panel; onOpenSettings() opens the settings window.
   */
  constructor(root, { serviceLabel, secret = null, onRetry, onOpenSettings }) {
    this.root = root;
    this.serviceLabel = serviceLabel;
    this.secret = secret;
    this.onRetry = onRetry;
    this.onOpenSettings = onOpenSettings;
    this.status = role(root, "status");
    this.body = role(root, "body");
    this.meta = role(root, "meta");
    const refresh = root.querySelector('[data-role="refresh"]');
    if (refresh) {
      refresh.addEventListener("click", () => this.onRetry());
    }
  }

  get state() {
    return this.root.dataset.state || State.LOADING;
  }

  setLoading(text = "Loading…") {
    this.root.dataset.state = State.LOADING;
    this.root.setAttribute("aria-busy", "true");
    this.status.replaceChildren(el("p", { className: "status-text", text }));
    this.status.hidden = false;
  }

  /** Show the body; `meta` is a short note in the header such as "Updated 14:05". */
  setData(meta = `Updated ${formatClock(new Date())}`) {
    this.root.dataset.state = State.DATA;
    this.root.removeAttribute("aria-busy");
    this.status.replaceChildren();
    this.status.hidden = true;
    this.body.hidden = false;
    this.meta.textContent = meta;
  }

  setEmpty(text) {
    this.root.dataset.state = State.EMPTY;
    this.root.removeAttribute("aria-busy");
    this.body.hidden = true;
    this.status.replaceChildren(el("p", { className: "status-text", text }));
    this.status.hidden = false;
  }

  /** Show a failure; `description` overrides describeFailure() for panels with their own wording. */
  setFailure(failure, description = null) {
    const { text, hint, actions } = description || describeFailure(failure, {
      serviceLabel: this.serviceLabel, secret: this.secret,
    });
    this.root.dataset.state = failure.state;
    this.root.dataset.reason = failure.reason || "";
    this.root.removeAttribute("aria-busy");
    this.body.hidden = true;

    const children = [el("p", { className: "status-text", text })];
    if (hint) {
      children.push(el("p", { className: "status-hint", text: hint }));
    }
    if (failure.reason) {
      children.push(el("p", { className: "status-reason" }, [
        "Reason: ", el("code", { text: failure.reason }),
      ]));
    }
    const buttons = actions.map((action) => this.actionButton(action));
    if (buttons.length) {
      children.push(el("div", { className: "status-actions" }, buttons));
    }
    this.status.replaceChildren(...children);
    this.status.hidden = false;
    this.meta.textContent = "";
  }

  actionButton(action) {
    if (action === "settings") {
      const button = el("button", { className: "button primary", text: "Open settings", attrs: { type: "button" } });
      button.addEventListener("click", () => this.onOpenSettings());
      return button;
    }
    const button = el("button", { className: "button", text: "Retry", attrs: { type: "button" } });
    button.addEventListener("click", () => this.onRetry());
    return button;
  }
}
