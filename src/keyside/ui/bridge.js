// keyside bridge: how a page calls host commands and keyed services without ever holding a key.
//
//   import { invoke, api, KeysideError, onSidecarState } from "/keyside/bridge.js";
//   await invoke("list_secrets", {});                  // host command; rejects with KeysideError
//   const res = await api.fetch("finnhub", "/api/v1/quote?symbol=AAPL");   // a Response
//   const feed = await api.feed("https://example.org/rss.xml");           // a Response
//
// The sidecar's session token is fetched with the host's local_api command and kept in this
// module's closure only: never on `window`, in storage, in the DOM or in an error message.
// A 401 from the sidecar (it restarted with a new token) refreshes the token once and retries.
// api.fetch and api.feed resolve with every HTTP response the sidecar sends, including its own
// error responses ({"error": {"reason", "message"}}); they reject with KeysideError only when
// no request could be made (bad arguments, no session, sidecar unreachable).

import { send } from "/keyside/transport.js";

const COMMAND_PATTERN = /^[a-z][a-z0-9_]{0,63}$/;
const SERVICE_PATTERN = /^[a-z][a-z0-9_-]{0,31}$/;
// Service paths and feed URLs longer than this are refused before any request; real ones are far shorter.
const MAX_URL_CHARS = 8192;
// The bridge runs local_api itself; a page that called it would hold the token in its own variables.
const BRIDGE_ONLY_COMMANDS = new Set(["local_api"]);
// How often onSidecarState requests the sidecar's state from the host while a listener is registered.
const SIDECAR_POLL_MS = 5000;
const LOOPBACK_HOSTS = new Set(["127.0.0.1", "localhost", "[::1]"]);

/** An error from the host, the sidecar or the bridge; `reason` is a stable snake_case name. */
export class KeysideError extends Error {
  constructor(reason, message, fix) {
    super(message || reason);
    this.name = "KeysideError";
    this.reason = reason;
    if (fix) {
      this.fix = fix;
    }
  }
}

function errorFromReply(error) {
  if (error && typeof error.reason === "string") {
    return new KeysideError(error.reason, String(error.message || error.reason),
      typeof error.fix === "string" ? error.fix : undefined);
  }
  return new KeysideError("invalid_reply", "The keyside host sent a reply the bridge cannot read.");
}

async function call(command, args) {
  const reply = await send(command, args);
  if (reply && reply.ok === true) {
    return reply.result;
  }
  throw errorFromReply(reply && reply.error);
}

/** Run host command `command` with `args`; resolve with its result or reject with KeysideError. */
export async function invoke(command, args = {}) {
  if (typeof command !== "string" || !COMMAND_PATTERN.test(command)) {
    throw new KeysideError("invalid_arguments", "The command name must be lower-case letters, digits and '_'.");
  }
  if (BRIDGE_ONLY_COMMANDS.has(command)) {
    throw new KeysideError("command_reserved", `${command} is used by the bridge itself.`,
      "Call keyed services with api.fetch() and feeds with api.feed().");
  }
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    throw new KeysideError("invalid_arguments", `The arguments of ${command} must be an object.`);
  }
  return call(command, args);
}

// -- the sidecar session ------------------------------------------------------------------

let session = null;         // {base, token} once fetched
let sessionRequest = null;  // the local_api call in progress, shared by concurrent callers
let firstBase = null;       // the sidecar origin this page started with (its CSP allows only that one)

function checkedSession(value) {
  if (!value || typeof value.url !== "string" || typeof value.token !== "string" || !value.token) {
    throw new KeysideError("invalid_reply", "The host's local_api reply has no sidecar URL or session.");
  }
  let url;
  try {
    url = new URL(value.url);
  } catch {
    throw new KeysideError("invalid_reply", "The host's local_api reply has an invalid sidecar URL.");
  }
  if (url.protocol !== "http:" || !LOOPBACK_HOSTS.has(url.hostname)) {
    throw new KeysideError("invalid_reply", "The sidecar URL from the host is not a loopback http URL.");
  }
  return { base: url.origin, token: value.token };
}

function getSession(refresh) {
  if (session && !refresh) {
    return Promise.resolve(session);
  }
  if (!sessionRequest) {
    sessionRequest = call("local_api", {})
      .then((value) => {
        session = checkedSession(value);
        firstBase = firstBase || session.base;
        return session;
      })
      .finally(() => {
        sessionRequest = null;
      });
  }
  return sessionRequest;
}

function unreachableError(current) {
  if (firstBase && current.base !== firstBase) {
    return new KeysideError("sidecar_moved", "The local API restarted on another port.", "Reload this window.");
  }
  return new KeysideError("sidecar_unreachable", "The local API (sidecar) did not respond.",
    "Check its state in the settings window; keyside restarts it on failure.");
}

async function requestOnce(current, route, init) {
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${current.token}`);
  let response;
  try {
    response = await fetch(current.base + route, {
      ...init,
      headers,
      mode: "cors",
      credentials: "omit",
      referrerPolicy: "no-referrer",
      redirect: "manual",
      cache: "no-store",
    });
  } catch (error) {
    if (error && error.name === "AbortError") {
      throw error;
    }
    noteSidecarFailure("sidecar_unreachable");
    throw unreachableError(current);
  }
  if (response.type === "opaqueredirect") {
    throw new KeysideError("sidecar_redirect", "The local API responded with a redirect, which the bridge does not follow.");
  }
  return response;
}

async function sidecarFetch(route, init) {
  const options = { ...(init || {}) };
  // A stream body is consumed by the first attempt and cannot be sent again after a 401.
  const replayable = !(typeof ReadableStream !== "undefined" && options.body instanceof ReadableStream);
  const current = await getSession(false);
  const response = await requestOnce(current, route, options);
  if (response.status !== 401 || !replayable || (options.signal && options.signal.aborted)) {
    return response;
  }
  // Refresh unless another request already replaced the token this one used.
  const fresh = await getSession(session === null || session.token === current.token);
  if (fresh.token === current.token) {
    return response;
  }
  return requestOnce(fresh, route, options);
}

function checkPath(path) {
  if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//") || path.length > MAX_URL_CHARS) {
    throw new KeysideError("invalid_arguments", "A service path must be a string starting with a single '/'.");
  }
}

/** Call `path` of keyed service `service` through the sidecar; resolve with the Response. */
async function serviceFetch(service, path, init = {}) {
  if (typeof service !== "string" || !SERVICE_PATTERN.test(service)) {
    throw new KeysideError("invalid_arguments", "The service name must be a service declared in keyside.toml.");
  }
  checkPath(path);
  return sidecarFetch(`/api/svc/${service}${path}`, init);
}

/** Fetch an RSS or Atom feed at `url` through the sidecar's feed proxy; resolve with the Response. */
async function feedFetch(url, init = {}) {
  if (typeof url !== "string" || !url || url.length > MAX_URL_CHARS) {
    throw new KeysideError("invalid_arguments", "The feed URL must be a non-empty string.");
  }
  return sidecarFetch(`/api/feed?url=${encodeURIComponent(url)}`, { method: "GET", ...init });
}

export const api = Object.freeze({ fetch: serviceFetch, feed: feedFetch });

// -- sidecar state notifications ----------------------------------------------------------

const stateListeners = new Set();
let pollTimer = null;
let lastState = null;

function publishState(state, reason) {
  if (lastState && lastState.state === state && lastState.reason === reason) {
    return;
  }
  lastState = Object.freeze({ state, reason });
  for (const listener of [...stateListeners]) {
    try {
      listener(lastState);
    } catch (error) {
      console.error("keyside: an onSidecarState listener failed:", error);
    }
  }
}

function noteSidecarFailure(reason) {
  if (stateListeners.size) {
    publishState("unreachable", reason);
  }
}

async function pollSidecarState() {
  try {
    const info = await call("runtime_info", {});
    const sidecar = info && info.sidecar;
    if (sidecar && typeof sidecar.state === "string") {
      publishState(sidecar.state, typeof sidecar.reason === "string" ? sidecar.reason : null);
    }
  } catch (error) {
    publishState("unknown", error instanceof KeysideError ? error.reason : "host_unreachable");
  }
}

/**
 * Call `listener({state, reason})` now and whenever the sidecar's state changes
 * ("starting", "ready", "restarting", "failed"; "unreachable" or "unknown" when the bridge
 * cannot tell). Return a function that removes the listener.
 */
export function onSidecarState(listener) {
  if (typeof listener !== "function") {
    throw new KeysideError("invalid_arguments", "onSidecarState needs a function.");
  }
  stateListeners.add(listener);
  if (lastState) {
    queueMicrotask(() => listener(lastState));
  }
  if (pollTimer === null) {
    pollSidecarState();
    pollTimer = setInterval(pollSidecarState, SIDECAR_POLL_MS);
  }
  return () => {
    stateListeners.delete(listener);
    if (!stateListeners.size && pollTimer !== null) {
      clearInterval(pollTimer);
      pollTimer = null;
    }
  };
}
