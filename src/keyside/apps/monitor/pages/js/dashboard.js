// Entry point of the dashboard window (index.html): reads the app's [ui] settings, starts the
// four panels and keeps them fresh. Panels in a failure state retry on their own, so a key
// saved in the settings window shows up here without a reload.

import { invoke, onSidecarState } from "/keyside/bridge.js";
import { aiProviders, readAppConfig, stringList } from "./app-config.js";
import { streamBrief } from "./brief.js";
import { el, role } from "./dom.js";
import { State } from "./failure.js";
import { loadHeadlines } from "./headlines.js";
import { Panel } from "./panel.js";
import { loadQuotes } from "./quotes.js";
import { loadSeries, seriesIds } from "./series.js";
import { showSidecarState } from "./sidecar-state.js";
import { footerVaultSentence } from "./vault.js";
import { openSettings } from "./windows.js";

const QUOTES_SERVICE = "finnhub";
const SERIES_SERVICE = "fred";

// Refresh periods for panels that show data, in seconds. Quotes move during trading hours;
// feeds and monthly economic series change slowly.
const REFRESH_S = { quotes: 60, headlines: 600, series: 3600 };
// Retry periods for panels in a failure state, in seconds. A missing key or a sidecar restart
// is checked often because the check stays on this computer; the others reach the upstream.
const RETRY_S = {
  [State.MISSING]: 5,
  [State.SIDECAR]: 5,
  [State.UNREACHABLE]: 30,
  [State.INVALID]: 60,
  [State.RATE_LIMITED]: 60,
  [State.ERROR]: 120,
};

/** A panel with its loader and timer; `load()` never runs twice at once. */
class Job {
  constructor(name, panel, loader, refreshS) {
    this.name = name;
    this.panel = panel;
    this.loader = loader;
    this.refreshS = refreshS;
    this.timer = null;
    this.running = null;
  }

  load() {
    if (!this.running) {
      clearTimeout(this.timer);
      this.running = this.loader()
        .catch((error) => console.error(`panel=${this.name} load failed: ${error?.message || error}`))
        .finally(() => {
          this.running = null;
          this.schedule();
        });
    }
    return this.running;
  }

  schedule() {
    const state = this.panel.state;
    const seconds = state === State.DATA ? this.refreshS : RETRY_S[state];
    if (seconds) {
      this.timer = setTimeout(() => this.load(), seconds * 1000);
    }
  }

  isFailing() {
    return Boolean(RETRY_S[this.panel.state]);
  }
}

async function main() {
  const config = readAppConfig(await invoke("app_config", {}));
  document.title = config.appName;
  role(document, "app-name").textContent = config.appName;
  // Without runtime_info the footer names no vault rather than a wrong one.
  invoke("runtime_info", {})
    .then((info) => { role(document, "vault-note").textContent = footerVaultSentence(info?.vault); })
    .catch(() => {});

  const settingsButton = role(document, "open-settings");
  const openSettingsWindow = () => openSettings(config.windows, role(document, "notice"));
  settingsButton.addEventListener("click", openSettingsWindow);

  const secretOf = (service) => config.services.get(service)?.secret || null;
  const makePanel = (id, serviceLabel, service, onRetry) => new Panel(document.getElementById(id), {
    serviceLabel, secret: secretOf(service), onRetry, onOpenSettings: openSettingsWindow,
  });

  const jobs = [];
  const headlinesState = { items: [], briefStarted: false };

  // The brief runs once after the first headlines arrive, then only on request, because each
  // brief costs the user tokens with their provider.
  let briefController = null;
  const problems = [];
  const providers = aiProviders(config.ui, config.services, problems);
  for (const problem of problems) {
    console.warn(`ai_providers: ${problem}`);
  }
  const briefPanel = makePanel("panel-brief", "AI provider", null, () => brief.load());
  const stopButton = role(briefPanel.root, "stop");
  const brief = new Job("brief", briefPanel, async () => {
    briefController = new AbortController();
    stopButton.hidden = false;
    try {
      await streamBrief(briefPanel, providers, headlinesState.items, briefController.signal);
    } finally {
      stopButton.hidden = true;
      briefController = null;
    }
  }, 0);
  stopButton.addEventListener("click", () => briefController?.abort());

  const headlinesPanel = makePanel("panel-headlines", "Feed", null, () => headlines.load());
  const headlines = new Job("headlines", headlinesPanel, async () => {
    const items = await loadHeadlines(headlinesPanel, stringList(config.ui, "feeds"));
    if (items.length) {
      headlinesState.items = items;
      if (!headlinesState.briefStarted) {
        headlinesState.briefStarted = true;
        brief.load();
      }
    }
  }, REFRESH_S.headlines);

  const quotesPanel = makePanel("panel-quotes", "Finnhub", QUOTES_SERVICE, () => quotes.load());
  const quotes = new Job("quotes", quotesPanel,
    () => loadQuotes(quotesPanel, QUOTES_SERVICE, stringList(config.ui, "watchlist")), REFRESH_S.quotes);

  const seriesPanel = makePanel("panel-series", "FRED", SERIES_SERVICE, () => series.load());
  const ids = seriesIds(config.ui.fred_series);
  const select = role(seriesPanel.root, "series-select");
  let currentSeries = ids[0] || "";
  select.replaceChildren(...ids.map((id) => el("option", { text: id, attrs: { value: id } })));
  role(seriesPanel.root, "series-picker").hidden = ids.length < 2;
  select.addEventListener("change", () => {
    currentSeries = select.value;
    seriesPanel.setLoading(`Loading ${currentSeries}…`);
    series.load();
  });
  const series = new Job("series", seriesPanel,
    () => loadSeries(seriesPanel, SERIES_SERVICE, currentSeries), REFRESH_S.series);

  jobs.push(headlines, quotes, series);
  if (providers.length === 0) {
    briefPanel.setEmpty("No AI provider is configured. Add services to [ui] ai_providers in keyside.toml.");
  } else {
    briefPanel.setEmpty("The brief is written once headlines have loaded.");
  }
  jobs.forEach((job) => job.load());

  role(document, "refresh-all").addEventListener("click", () => jobs.forEach((job) => job.load()));
  // Coming back to this window (often from the settings window) retries failing panels now.
  const retryFailing = () => {
    if (document.visibilityState === "visible") {
      [...jobs, brief].filter((job) => job.isFailing()).forEach((job) => job.load());
    }
  };
  window.addEventListener("focus", retryFailing);
  document.addEventListener("visibilitychange", retryFailing);

  await showSidecarState(role(document, "sidecar-state"), onSidecarState);
}

main().catch((error) => {
  const notice = document.querySelector('[data-role="notice"]');
  if (notice) {
    notice.hidden = false;
    notice.textContent = `The dashboard could not start: ${error?.message || error}`
      + (error?.reason ? ` (reason: ${error.reason})` : "");
  }
  console.error(`dashboard start failed: reason=${error?.reason || "unknown"}`);
});
