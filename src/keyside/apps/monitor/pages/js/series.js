// Economic series panel: FRED observations (GET /fred/series/observations, JSON) drawn as a
// line chart, with the series title and units from GET /fred/series when available.

import { el } from "./dom.js";
import { lineChart } from "./chart.js";
import { State } from "./failure.js";
import { fetchServiceJson } from "./requests.js";

// Years of history in the chart.
export const HISTORY_YEARS = 10;
// FRED series ids are upper-case letters and digits, e.g. UNRATE, CPIAUCSL, DGS10.
const SERIES_ID_PATTERN = /^[A-Za-z0-9_]{1,40}$/;

/** Return the FRED series ids from the [ui] fred_series value (a string or a list). */
export function seriesIds(configured) {
  let list = [];
  if (Array.isArray(configured)) {
    list = configured;
  } else if (configured) {
    list = [configured];
  }
  return list.filter((id) => typeof id === "string" && SERIES_ID_PATTERN.test(id));
}

/** Load series `seriesId` from the service named `service` into `panel`. */
export async function loadSeries(panel, service, seriesId) {
  if (!seriesId) {
    panel.setEmpty("No series is configured. Add a FRED series id to [ui] fred_series in keyside.toml.");
    return;
  }
  if (panel.state !== State.DATA) {
    panel.setLoading(`Loading ${seriesId}…`);
  }
  const id = encodeURIComponent(seriesId);
  const start = new Date();
  start.setUTCFullYear(start.getUTCFullYear() - HISTORY_YEARS);
  const startText = start.toISOString().slice(0, 10);

  let observations;
  let info = null;
  try {
    const [data, infoResult] = await Promise.all([
      fetchServiceJson(service, `/fred/series/observations?series_id=${id}&file_type=json&observation_start=${startText}`),
      // The title and units are a nicety; the chart is drawn without them.
      fetchServiceJson(service, `/fred/series?series_id=${id}&file_type=json`).catch(() => null),
    ]);
    observations = data.observations;
    info = infoResult && Array.isArray(infoResult.seriess) ? infoResult.seriess[0] : null;
  } catch (failure) {
    panel.setFailure(failure);
    return;
  }

  const points = toPoints(observations);
  if (points.length < 2) {
    panel.setEmpty(`FRED returned no observations for ${seriesId} since ${startText}.`);
    return;
  }
  renderSeries(panel.body, seriesId, info, points);
  panel.setData(`Updated ${points[points.length - 1].date.toISOString().slice(0, 10)}`);
}

/** Convert FRED observations to chart points; FRED writes a missing value as ".". */
export function toPoints(observations) {
  if (!Array.isArray(observations)) {
    return [];
  }
  const points = [];
  for (const observation of observations) {
    const value = Number.parseFloat(observation?.value);
    const time = Date.parse(`${observation?.date}T00:00:00Z`);
    if (Number.isFinite(value) && !Number.isNaN(time)) {
      points.push({ date: new Date(time), value });
    }
  }
  return points.sort((a, b) => a.date - b.date);
}

function renderSeries(body, seriesId, info, points) {
  const title = typeof info?.title === "string" ? info.title : seriesId;
  const units = typeof info?.units === "string" ? info.units : "";
  const last = points[points.length - 1];
  const previous = points[points.length - 2];
  const digits = Math.min(3, Math.max(0, ...points.slice(-12).map((p) => decimals(p.value))));
  const format = (value) => value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const change = last.value - previous.value;
  const trend = trendOf(change);

  const first = points[0].date.getUTCFullYear();
  const label = `${title}${units ? `, ${units}` : ""}, ${first} to ${last.date.getUTCFullYear()}`;
  const summary = el("p", { className: "series-summary" }, [
    el("span", { className: "series-value", text: format(last.value) }),
    el("span", { className: "series-units", text: units ? ` ${units}` : "" }),
    el("span", { className: `series-change ${trend}`, text: ` ${TREND_SIGNS[trend]}${format(Math.abs(change))} vs previous` }),
    el("span", { className: "series-date", text: ` · ${last.date.toISOString().slice(0, 10)}` }),
  ]);
  const figure = el("figure", { className: "series-figure" }, [
    lineChart(points, { label, formatValue: format }),
    el("figcaption", { className: "series-caption" }, [
      el("span", { text: title }), " ", el("code", { text: seriesId }), ". Source: FRED, Federal Reserve Bank of St. Louis.",
    ]),
  ]);
  body.replaceChildren(summary, figure);
}

const TREND_SIGNS = { up: "+", down: "−", flat: "±" };

function trendOf(change) {
  if (change > 0) {
    return "up";
  }
  return change < 0 ? "down" : "flat";
}

function decimals(value) {
  const text = String(value);
  const dot = text.indexOf(".");
  return dot < 0 ? 0 : text.length - dot - 1;
}
