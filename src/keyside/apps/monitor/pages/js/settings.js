// Entry point of the settings window (settings.html): one card per secret the app declares,
// with a write-only field, Validate, Save and Delete, plus the local API's state.
// No command returns a key, so this page can only show whether a key is set and whether the
// last check passed. A typed value is read from the field when a button is pressed and sent
// to the host. The field is cleared once the host has saved it, and the page stores it nowhere.

import { invoke, onSidecarState } from "/keyside/bridge.js";
import { readAppConfig } from "./app-config.js";
import { el, formatAge, role } from "./dom.js";
import { externalLink } from "./links.js";
import { showSidecarState } from "./sidecar-state.js";
import { savedMessage, settingsVaultSentence } from "./vault.js";

// Host limit on a secret value, so the field stops where the host would reject the value.
const MAX_SECRET_CHARS = 8192;
// How long a Delete button waits for its confirming second press, in milliseconds.
const DELETE_CONFIRM_MS = 5000;

const VALIDATION_TEXT = {
  valid: "Valid: the service accepted the key.",
  invalid: "Invalid: the service rejected the key.",
  unreachable: "Not checked: the service cannot be reached. The key may still be right.",
};

class SecretCard {
  constructor(secret, { services, keyPage, vault, onChanged }) {
    this.name = secret.name;
    this.vault = vault;
    this.onChanged = onChanged;
    this.confirmTimer = null;
    const id = `secret-${secret.name}`;

    this.badge = el("span", { className: "badge" });
    this.validation = el("p", { className: "secret-validation" });
    this.input = el("input", {
      attrs: {
        id: `${id}-value`, type: "password", autocomplete: "off", spellcheck: "false",
        autocapitalize: "off", maxlength: MAX_SECRET_CHARS, "aria-describedby": `${id}-message`,
      },
    });
    this.validateButton = el("button", { className: "button", text: "Validate", attrs: { type: "button" } });
    this.saveButton = el("button", { className: "button primary", text: "Save", attrs: { type: "button" } });
    this.deleteButton = el("button", { className: "button danger", text: "Delete", attrs: { type: "button" } });
    this.message = el("p", { className: "secret-message", attrs: { id: `${id}-message`, role: "status", "aria-live": "polite" } });

    const details = [el("p", { className: "secret-description", text: secret.description || "" })];
    if (services.length) {
      details.push(el("p", { className: "secret-services", text: `Used by: ${services.join(", ")}` }));
    }
    if (keyPage) {
      const onError = (error) => this.say(`Could not open the browser (reason: ${error?.reason || "unknown"}).`, "error");
      details.push(el("p", { className: "secret-link" }, [externalLink(keyPage, "Get a key", { onError })]));
    }

    this.root = el("article", { className: "secret-card", dataset: { secret: secret.name }, attrs: { "aria-labelledby": `${id}-title` } }, [
      el("header", { className: "secret-header" }, [
        el("h2", { text: secret.name, attrs: { id: `${id}-title` } }), this.badge,
      ]),
      ...details,
      this.validation,
      el("div", { className: "secret-form" }, [
        el("label", { text: "New value", attrs: { for: `${id}-value` } }),
        this.input,
        el("div", { className: "secret-actions" }, [this.validateButton, this.saveButton, this.deleteButton]),
      ]),
      this.message,
    ]);

    this.validateButton.addEventListener("click", () => this.validate());
    this.saveButton.addEventListener("click", () => this.save());
    this.deleteButton.addEventListener("click", () => this.remove());
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        this.save();
      }
    });
    this.update(secret);
  }

  /** Show the state from one list_secrets entry: configured, withheld, and the last validation. */
  update(secret) {
    this.configured = Boolean(secret.configured);
    // A withheld key is stored but bound to other upstream origins, so the sidecar never gets it.
    const withheld = secret.binding === "mismatch";
    this.root.dataset.configured = String(this.configured);
    this.root.dataset.binding = withheld ? "mismatch" : "ok";
    let badgeText = "Not set";
    let badgeKind = "muted";
    if (withheld) {
      badgeText = "Withheld";
      badgeKind = "warn";
    } else if (this.configured) {
      badgeText = "Set";
      badgeKind = "ok";
    }
    this.badge.textContent = badgeText;
    this.badge.className = `badge ${badgeKind}`;
    this.deleteButton.disabled = !this.configured && !withheld;
    if (withheld) {
      this.validation.replaceChildren(...describeWithheld(secret));
    } else {
      this.validation.replaceChildren(...describeValidation(secret.last_validation));
    }
  }

  say(text, kind = "info") {
    this.message.textContent = text;
    this.message.dataset.kind = kind;
  }

  async run(action) {
    const buttons = [this.validateButton, this.saveButton, this.deleteButton];
    buttons.forEach((button) => { button.disabled = true; });
    this.root.setAttribute("aria-busy", "true");
    try {
      await action();
    } catch (error) {
      this.say(`Failed: ${error?.message || "unknown error"}${error?.reason ? ` (reason: ${error.reason})` : ""}`, "error");
    } finally {
      // The card stays busy until the list is read again, so its badge and last check are
      // current once aria-busy goes.
      await this.onChanged();
      this.root.removeAttribute("aria-busy");
      this.validateButton.disabled = false;
      this.saveButton.disabled = false;
    }
  }

  validate() {
    const typed = this.input.value.trim();
    if (!typed && !this.configured) {
      this.say("Paste a key into the field to validate it.", "error");
      return;
    }
    this.say(typed ? "Checking the new value…" : "Checking the saved key…");
    return this.run(async () => {
      const args = typed ? { name: this.name, value: typed } : { name: this.name };
      const result = await invoke("validate_secret", args);
      const text = VALIDATION_TEXT[result?.result] || `Result: ${result?.result}`;
      const subject = typed ? "New value" : "Saved key";
      this.say(`${subject}. ${text}${result?.reason ? ` (reason: ${result.reason})` : ""}`,
        result?.result === "valid" ? "ok" : "error");
    });
  }

  save() {
    const typed = this.input.value.trim();
    if (!typed) {
      this.say("Paste a key into the field, then save.", "error");
      return;
    }
    this.say("Saving…");
    return this.run(async () => {
      await invoke("set_secret", { name: this.name, value: typed });
      this.input.value = "";
      this.say(savedMessage(this.vault), "ok");
    });
  }

  remove() {
    // The first press arms the button; a second press within DELETE_CONFIRM_MS deletes.
    // An inline confirmation, because browsers under test and some webviews hide dialogs.
    if (!this.confirmTimer) {
      this.deleteButton.textContent = "Confirm delete";
      this.say(`Press "Confirm delete" to remove the saved ${this.name}.`);
      this.confirmTimer = setTimeout(() => this.disarmDelete(), DELETE_CONFIRM_MS);
      return;
    }
    this.disarmDelete();
    this.say("Deleting…");
    return this.run(async () => {
      await invoke("delete_secret", { name: this.name });
      this.say("Deleted.", "ok");
    });
  }

  disarmDelete() {
    clearTimeout(this.confirmTimer);
    this.confirmTimer = null;
    this.deleteButton.textContent = "Delete";
  }
}

function describeWithheld(secret) {
  const recorded = (secret.recorded_origins || []).join(", ") || "other upstreams";
  const current = (secret.current_origins || []).join(", ") || "this app's upstreams";
  return [
    `The stored key was saved for ${recorded}, and this app would send it to ${current}, `
      + "so it is not used. Save a key for this app, or move the stored key with ",
    el("code", { text: `keyside secrets bind ${secret.name}` }),
    ".",
  ];
}

function describeValidation(last) {
  if (!last || typeof last !== "object") {
    return ["Not checked yet."];
  }
  const parts = [`Last check: ${last.result || "unknown"}`];
  if (last.reason) {
    parts.push(" (", el("code", { text: last.reason }), ")");
  }
  const when = parseTime(last.at);
  if (when) {
    parts.push(", ", el("time", { text: formatAge(when), attrs: { datetime: when.toISOString() } }));
  }
  parts.push(".");
  return parts;
}

// `at` may be an ISO 8601 string or Unix seconds.
function parseTime(at) {
  if (typeof at === "number" && Number.isFinite(at)) {
    return new Date(at * 1000);
  }
  if (typeof at === "string") {
    const time = Date.parse(at);
    return Number.isNaN(time) ? null : new Date(time);
  }
  return null;
}

function renderRuntime(node, info) {
  const rows = [
    ["keyside", info?.keyside], ["Python", info?.python], ["System", info?.os], ["Vault", info?.vault?.display_name],
  ].filter(([, value]) => typeof value === "string" && value);
  node.replaceChildren(...rows.flatMap(([label, value]) => [el("dt", { text: label }), el("dd", { text: value })]));
}

async function main() {
  const config = readAppConfig(await invoke("app_config", {}));
  document.title = `${config.appName} settings`;
  role(document, "app-name").textContent = `${config.appName} settings`;

  const usedBy = new Map();
  for (const service of config.services.values()) {
    if (service.secret) {
      usedBy.set(service.secret, [...(usedBy.get(service.secret) || []), service.name]);
    }
  }
  const keyPages = typeof config.ui.key_pages === "object" && config.ui.key_pages ? config.ui.key_pages : {};
  const list = role(document, "secret-list");
  const cards = new Map();
  // The text about where keys are stored depends on the vault. Without runtime_info the page
  // names no vault rather than a wrong one.
  const info = await invoke("runtime_info", {}).catch(() => null);
  role(document, "vault-note").textContent = settingsVaultSentence(info?.vault);
  if (info) {
    renderRuntime(role(document, "runtime"), info);
  }

  const refresh = async () => {
    const secrets = await invoke("list_secrets", {});
    for (const secret of secrets) {
      const card = cards.get(secret.name);
      if (card) {
        card.update(secret);
        continue;
      }
      const keyPage = typeof keyPages[secret.name] === "string" && /^https?:\/\//.test(keyPages[secret.name])
        ? keyPages[secret.name] : null;
      const created = new SecretCard(secret, {
        services: usedBy.get(secret.name) || [], keyPage, vault: info?.vault, onChanged: () => refresh().catch(showError),
      });
      cards.set(secret.name, created);
      list.append(created.root);
    }
    if (secrets.length === 0) {
      list.replaceChildren(el("p", { text: "This app declares no secrets." }));
    }
    list.setAttribute("aria-busy", "false");
  };
  await refresh();

  await showSidecarState(role(document, "sidecar-state"), onSidecarState);
}

function showError(error) {
  const notice = role(document, "notice");
  notice.hidden = false;
  notice.textContent = `${error?.message || error}${error?.reason ? ` (reason: ${error.reason})` : ""}`;
}

main().catch((error) => {
  showError(error);
  console.error(`settings start failed: reason=${error?.reason || "unknown"}`);
});
