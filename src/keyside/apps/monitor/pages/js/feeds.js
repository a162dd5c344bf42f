// RSS 2.0, RSS 1.0 and Atom parsing for the headlines panel. Feeds are untrusted: titles are
// reduced to plain text, and only absolute http(s) links are kept.

// Longest title kept; feeds sometimes put a whole article in the title.
const MAX_TITLE_CHARS = 240;
// Items kept from one feed, so one busy feed cannot crowd out the others.
export const MAX_ITEMS_PER_FEED = 20;

/** A parse failure with a reason name, like the sidecar's errors. */
export class FeedError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = "FeedError";
    this.reason = reason;
  }
}

/**
 * Parse feed XML fetched from `feedUrl`.
 * Returns {title, items: [{title, link, published: Date | null, source}]}, items newest first;
 * raises FeedError("feed_invalid") when the text is not RSS or Atom.
 */
export function parseFeed(xmlText, feedUrl) {
  // NOTE: DOMParser documents run no script, but Chromium still reports an inline event
  // handler on an element in the XHTML namespace (an Atom type="xhtml" title) to the page's
  // CSP as a violation while parsing. Nothing runs; the report is the only effect.
  const doc = new DOMParser().parseFromString(xmlText, "application/xml");
  if (doc.getElementsByTagName("parsererror").length > 0) {
    throw new FeedError("feed_invalid", `${hostOf(feedUrl)} did not return well-formed XML.`);
  }
  const root = doc.documentElement;
  let parsed;
  if (root.localName === "feed") {
    parsed = parseAtom(root, feedUrl);
  } else if (root.localName === "rss" || root.localName === "RDF") {
    parsed = parseRss(root, feedUrl);
  } else {
    throw new FeedError("feed_invalid", `${hostOf(feedUrl)} returned <${root.localName}>, not RSS or Atom.`);
  }
  const title = parsed.title || hostOf(feedUrl);
  const items = parsed.items
    .filter((item) => item.title)
    .map((item) => ({ ...item, source: title }))
    .sort(byNewest)
    .slice(0, MAX_ITEMS_PER_FEED);
  return { title, items };
}

function parseRss(root, feedUrl) {
  const channel = firstChild(root, "channel");
  const title = plainText(childText(channel, "title"));
  // RSS 2.0 puts <item> inside <channel>; RSS 1.0 (RDF) puts them next to it.
  const itemNodes = [...root.getElementsByTagNameNS("*", "item")];
  const items = itemNodes.map((item) => ({
    title: plainText(childText(item, "title")),
    link: safeLink(childText(item, "link") || permalinkGuid(item), feedUrl),
    published: parseDate(childText(item, "pubDate") || childText(item, "date")),
  }));
  return { title, items };
}

function parseAtom(root, feedUrl) {
  const title = plainText(childText(root, "title"));
  const entries = [...root.children].filter((node) => node.localName === "entry");
  const items = entries.map((entry) => ({
    title: plainText(childText(entry, "title")),
    link: safeLink(atomLink(entry), feedUrl),
    published: parseDate(childText(entry, "published") || childText(entry, "updated")),
  }));
  return { title, items };
}

// The entry's web page: <link rel="alternate"> or a <link> without rel.
function atomLink(entry) {
  const links = [...entry.children].filter((node) => node.localName === "link");
  const alternate = links.find((link) => !link.getAttribute("rel") || link.getAttribute("rel") === "alternate");
  return alternate ? alternate.getAttribute("href") || "" : "";
}

function permalinkGuid(item) {
  const guid = firstChild(item, "guid");
  if (!guid || guid.getAttribute("isPermaLink") === "false") {
    return "";
  }
  return guid.textContent || "";
}

function firstChild(node, localName) {
  if (!node) {
    return null;
  }
  return [...node.children].find((child) => child.localName === localName) || null;
}

function childText(node, localName) {
  const child = firstChild(node, localName);
  return child ? child.textContent || "" : "";
}

// Tags, with quoted attribute values that may contain ">".
const TAG_PATTERN = /<\/?[A-Za-z][^>"']*(?:(?:"[^"]*"|'[^']*')[^>"']*)*>/g;
const COMMENT_PATTERN = /<!--[\s\S]*?-->/g;
// Script and style elements, whose content is code rather than title text.
const CODE_ELEMENT_PATTERN = /<(script|style)\b[\s\S]*?<\/\1\s*>/gi;
const ENTITY_PATTERN = /&(#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z]{2,8});/g;
// HTML entities that feeds use in titles; others stay as written.
const NAMED_ENTITIES = {
  amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: "\u00a0", ndash: "\u2013", mdash: "\u2014",
  hellip: "\u2026", lsquo: "\u2018", rsquo: "\u2019", ldquo: "\u201c", rdquo: "\u201d", laquo: "\u00ab",
  raquo: "\u00bb", copy: "\u00a9", reg: "\u00ae", trade: "\u2122", euro: "\u20ac", pound: "\u00a3",
};

/**
 * Reduce a title to plain text. Atom titles of type "html" and many RSS titles carry markup.
 * Tags are removed with patterns rather than an HTML parser: even an inert DOMParser
 * document makes Chromium report an inline event handler in the markup as a CSP violation.
 * The result is only ever shown through textContent, so an odd leftover is cosmetic.
 */
export function plainText(value) {
  let text = String(value || "")
    .replace(COMMENT_PATTERN, "")
    .replace(CODE_ELEMENT_PATTERN, "")
    .replace(TAG_PATTERN, "");
  text = decodeEntities(text).replace(/\s+/g, " ").trim();
  return text.length > MAX_TITLE_CHARS ? `${text.slice(0, MAX_TITLE_CHARS - 1)}…` : text;
}

function decodeEntities(text) {
  return text.replace(ENTITY_PATTERN, (whole, body) => {
    if (body[0] !== "#") {
      return NAMED_ENTITIES[body] ?? whole;
    }
    const code = body[1] === "x" || body[1] === "X" ? Number.parseInt(body.slice(2), 16) : Number.parseInt(body.slice(1), 10);
    return code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff) ? String.fromCodePoint(code) : whole;
  });
}

/** Return `href` resolved against the feed URL when it is http or https, else "". */
export function safeLink(href, feedUrl) {
  const trimmed = String(href || "").trim();
  if (!trimmed) {
    return "";
  }
  try {
    const url = new URL(trimmed, feedUrl);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : "";
  } catch {
    return "";
  }
}

function parseDate(value) {
  const time = Date.parse(String(value || "").trim());
  return Number.isNaN(time) ? null : new Date(time);
}

function byNewest(a, b) {
  return (b.published ? b.published.getTime() : 0) - (a.published ? a.published.getTime() : 0);
}

/** Return the host name of a URL for messages, or the input when it does not parse. */
export function hostOf(url) {
  try {
    return new URL(url).host;
  } catch {
    return String(url);
  }
}
