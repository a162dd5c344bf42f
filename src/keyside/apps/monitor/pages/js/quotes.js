// Watchlist panel: one Finnhub quote per symbol (GET /api/v1/quote?symbol=...), which returns
// c (current), d (change), dp (change %), h, l, o (day high, low, open), pc (previous close)
// and t (Unix time). Finnhub returns zeros for an unknown symbol rather than an error.

import { el } from "./dom.js";
import { State, classifyError } from "./failure.js";
import { fetchServiceJson } from "./requests.js";

// Finnhub's free tier allows 60 calls a minute; with a refresh a minute this stays well under.
export const MAX_SYMBOLS = 12;
// Letters, digits and the punctuation exchanges use in tickers (BRK.B, BTC-USD, ^GSPC, EUR=X).
const SYMBOL_PATTERN = /^[A-Za-z0-9.:^=_-]{1,24}$/;

/** Load quotes for `symbols` from the service named `service` into `panel`. */
export async function loadQuotes(panel, service, symbols) {
  const valid = symbols.filter((symbol) => SYMBOL_PATTERN.test(symbol)).slice(0, MAX_SYMBOLS);
  if (valid.length === 0) {
    panel.setEmpty("No symbols are configured. Add symbols to [ui] watchlist in keyside.toml.");
    return;
  }
  if (panel.state !== State.DATA) {
    panel.setLoading("Loading quotes…");
  }

  // The first request shows whether the key works, and the rest run only when it does, so a
  // missing or rejected key costs one request, not one per symbol.
  const first = await loadQuote(service, valid[0]);
  if (first.failure && first.failure.state !== State.ERROR) {
    panel.setFailure(first.failure);
    return;
  }
  const rest = await Promise.all(valid.slice(1).map((symbol) => loadQuote(service, symbol)));
  renderQuotes(panel.body, [first, ...rest]);
  panel.setData();
}

async function loadQuote(service, symbol) {
  try {
    const quote = await fetchServiceJson(service, `/api/v1/quote?symbol=${encodeURIComponent(symbol)}`);
    return { symbol, quote };
  } catch (error) {
    return { symbol, failure: classifyError(error) };
  }
}

function number(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function formatPrice(value) {
  const n = number(value);
  return n === null ? "—" : n.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function formatSigned(value, suffix = "") {
  const n = number(value);
  if (n === null) {
    return "—";
  }
  let sign = "";
  if (n > 0) {
    sign = "+";
  } else if (n < 0) {
    sign = "−";
  }
  return `${sign}${Math.abs(n).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })}${suffix}`;
}

function trendClass(value) {
  const n = number(value);
  if (n === null || n === 0) {
    return "flat";
  }
  return n > 0 ? "up" : "down";
}

function renderQuotes(body, rows) {
  const head = el("thead", {}, [el("tr", {}, [
    el("th", { text: "Symbol", attrs: { scope: "col" } }),
    el("th", { className: "num", text: "Price", attrs: { scope: "col" } }),
    el("th", { className: "num", text: "Change", attrs: { scope: "col" } }),
    el("th", { className: "num", text: "Change %", attrs: { scope: "col" } }),
    el("th", { className: "num wide-only", text: "Day range", attrs: { scope: "col" } }),
    el("th", { className: "num wide-only", text: "Open", attrs: { scope: "col" } }),
    el("th", { className: "num wide-only", text: "Prev. close", attrs: { scope: "col" } }),
  ])]);
  const tbody = el("tbody", {}, rows.map(renderRow));
  const table = el("table", { className: "quote-table" }, [
    el("caption", { className: "visually-hidden", text: "Watchlist quotes" }), head, tbody,
  ]);
  body.replaceChildren(table);
}

function renderRow({ symbol, quote, failure }) {
  const symbolCell = el("th", { className: "symbol", text: symbol, attrs: { scope: "row" } });
  if (failure) {
    return el("tr", { className: "quote-failed", dataset: { symbol } }, [
      symbolCell,
      el("td", { className: "row-note", text: `Not available (${failure.reason || failure.state})`, attrs: { colspan: 6 } }),
    ]);
  }
  // An unknown symbol comes back as all zeros.
  if (!number(quote.c)) {
    return el("tr", { className: "quote-failed", dataset: { symbol } }, [
      symbolCell, el("td", { className: "row-note", text: "No data for this symbol", attrs: { colspan: 6 } }),
    ]);
  }
  const trend = trendClass(quote.d);
  return el("tr", { className: `quote ${trend}`, dataset: { symbol } }, [
    symbolCell,
    el("td", { className: "num price", text: formatPrice(quote.c) }),
    el("td", { className: `num change ${trend}`, text: formatSigned(quote.d) }),
    el("td", { className: `num change ${trend}`, text: formatSigned(quote.dp, "%") }),
    el("td", { className: "num wide-only", text: `${formatPrice(quote.l)} – ${formatPrice(quote.h)}` }),
    el("td", { className: "num wide-only", text: formatPrice(quote.o) }),
    el("td", { className: "num wide-only", text: formatPrice(quote.pc) }),
  ]);
}
