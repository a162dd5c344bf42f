// Headlines panel: every configured feed through the feed proxy, merged newest first.

import { el, formatAge } from "./dom.js";
import { FeedError, hostOf, parseFeed } from "./feeds.js";
import { State, RequestFailure, classifyError } from "./failure.js";
import { externalLink } from "./links.js";
import { fetchFeedText } from "./requests.js";

// Headlines shown in the panel, across all feeds.
export const MAX_HEADLINES = 40;
// Feeds read from the [ui] table; more than this is a configuration mistake, not a feature.
export const MAX_FEEDS = 12;

/**
 * Load every feed in `feedUrls` into `panel`. Returns the merged items (newest first), or []
 * when no feed could be read. The panel shows data when at least one feed loaded, and notes
 * the feeds that failed.
 */
export async function loadHeadlines(panel, feedUrls) {
  const urls = feedUrls.slice(0, MAX_FEEDS);
  if (urls.length === 0) {
    panel.setEmpty("No feeds are configured. Add feed URLs to [ui] feeds in keyside.toml.");
    return [];
  }
  if (panel.state !== State.DATA) {
    panel.setLoading(`Loading ${urls.length} feed${urls.length === 1 ? "" : "s"}…`);
  }

  const results = await Promise.all(urls.map((url) => loadOneFeed(url)));
  const loaded = results.filter((result) => result.items);
  const failed = results.filter((result) => result.failure);

  if (loaded.length === 0) {
    panel.setFailure(summarizeFailures(failed), describeAllFailed(failed));
    return [];
  }

  const items = loaded.flatMap((result) => result.items)
    .sort((a, b) => (b.published?.getTime() || 0) - (a.published?.getTime() || 0))
    .slice(0, MAX_HEADLINES);
  renderHeadlines(panel.body, items, failed);
  panel.setData(`${items.length} headlines from ${loaded.length} of ${urls.length} feeds`);
  return items;
}

async function loadOneFeed(url) {
  try {
    const text = await fetchFeedText(url);
    return { url, items: parseFeed(text, url).items };
  } catch (error) {
    const failure = error instanceof FeedError
      ? new RequestFailure({ state: State.ERROR, reason: error.reason, message: error.message })
      : classifyError(error);
    return { url, failure };
  }
}

// The panel-level failure when no feed loaded: offline wins, because it explains the rest.
function summarizeFailures(failed) {
  const offline = failed.find((result) => result.failure.state === State.UNREACHABLE);
  return (offline || failed[0]).failure;
}

function describeAllFailed(failed) {
  const failure = summarizeFailures(failed);
  if (failure.state === State.UNREACHABLE) {
    return {
      text: "No feed can be reached.",
      hint: "This computer may be offline. Headlines reload automatically.",
      actions: ["retry"],
    };
  }
  if (failure.state === State.SIDECAR) {
    return { text: "The local API (sidecar) is not available.", hint: failure.message, actions: ["retry"] };
  }
  const names = failed.map((result) => hostOf(result.url)).join(", ");
  return { text: "No feed could be loaded.", hint: `${names}: ${failure.message}`, actions: ["retry"] };
}

function renderHeadlines(body, items, failed) {
  const list = el("ol", { className: "headline-list" });
  const now = new Date();
  for (const item of items) {
    const title = item.link
      ? externalLink(item.link, item.title, { className: "headline-link" })
      : el("span", { className: "headline-link", text: item.title });
    const meta = [el("span", { className: "headline-source", text: item.source })];
    if (item.published) {
      meta.push(el("time", {
        className: "headline-time",
        text: formatAge(item.published, now),
        attrs: { datetime: item.published.toISOString() },
      }));
    }
    list.append(el("li", { className: "headline" }, [title, el("div", { className: "headline-meta" }, meta)]));
  }
  const children = [list];
  if (failed.length) {
    const notes = failed.map((result) => `${hostOf(result.url)} (${result.failure.reason || result.failure.state})`);
    children.unshift(el("p", { className: "panel-note", attrs: { role: "note" } }, [
      `${failed.length} feed${failed.length === 1 ? "" : "s"} failed: ${notes.join(", ")}`,
    ]));
  }
  body.replaceChildren(...children);
}
