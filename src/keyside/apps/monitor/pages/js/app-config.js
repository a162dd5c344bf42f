// Reads the app_config command's result into the settings the monitor pages use, with
// checks, so a malformed [ui] table gives a clear message instead of a broken panel.

/**
 * Return {appName, ui, services: Map(name -> {name, secret}), windows: Map(label -> object)}
 * from the app_config result. `services` and `windows` may be lists of names or of objects.
 */
export function readAppConfig(config) {
  const ui = isObject(config?.ui) ? config.ui : {};
  const services = new Map();
  for (const entry of Array.isArray(config?.services) ? config.services : []) {
    const service = typeof entry === "string" ? { name: entry, secret: null } : entry;
    if (isObject(service) && typeof service.name === "string") {
      services.set(service.name, { name: service.name, secret: typeof service.secret === "string" ? service.secret : null });
    }
  }
  const windows = new Map();
  for (const entry of Array.isArray(config?.windows) ? config.windows : []) {
    const window = typeof entry === "string" ? { label: entry } : entry;
    if (isObject(window) && typeof window.label === "string") {
      windows.set(window.label, window);
    }
  }
  const appName = typeof config?.app?.name === "string" ? config.app.name : "Monitor";
  return { appName, ui, services, windows };
}

/** Return the string list at ui[key]; a single string counts as a list of one. */
export function stringList(ui, key) {
  const value = ui[key];
  let list = [];
  if (Array.isArray(value)) {
    list = value;
  } else if (typeof value === "string") {
    list = [value];
  }
  return list.filter((item) => typeof item === "string" && item.trim()).map((item) => item.trim());
}

/**
 * Return the AI providers in the order of ui.ai_providers as
 * [{service, label, path, model, secret}], skipping entries without a path and model in
 * [ui.ai.<service>] or without a matching service. `problems` collects what was skipped.
 */
export function aiProviders(ui, services, problems = []) {
  const table = isObject(ui.ai) ? ui.ai : {};
  const providers = [];
  for (const name of stringList(ui, "ai_providers")) {
    const entry = isObject(table[name]) ? table[name] : {};
    if (typeof entry.path !== "string" || !entry.path.startsWith("/") || typeof entry.model !== "string") {
      problems.push(`[ui.ai.${name}] needs path and model`);
      continue;
    }
    if (services.size && !services.has(name)) {
      problems.push(`ai_providers names ${name}, which is not a [services] entry`);
      continue;
    }
    providers.push({
      service: name,
      label: typeof entry.label === "string" ? entry.label : name,
      path: entry.path,
      model: entry.model,
      secret: services.get(name)?.secret ?? null,
    });
  }
  return providers;
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
