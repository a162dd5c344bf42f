// Turns a failed request into one of a few panel states the user can act on. The sidecar and
// the host report failures with snake_case reason names. A RequestFailure keeps the name
// unchanged, so the page can show it next to the plain-language message.

export const State = Object.freeze({
  LOADING: "loading",
  DATA: "data",
  EMPTY: "empty",
  MISSING: "missing",          // the service's key is not set
  INVALID: "invalid",          // the upstream rejected the key (401 or 403)
  UNREACHABLE: "unreachable",  // DNS, connect or timeout failure: offline or the server is down
  BLOCKED: "blocked",          // keyside's outbound guard or service rules refused the request
  RATE_LIMITED: "rate_limited",
  SIDECAR: "sidecar",          // the local API (sidecar) is not running or rejected the session
  ERROR: "error",
});

// Reason names from the sidecar (service proxy, feed proxy), its outbound guard and the bridge.
const MISSING_REASONS = new Set(["secret_not_configured"]);
const UNREACHABLE_REASONS = new Set([
  "connect_failed", "upstream_failed", "tls_failed", "tls_certificate", "response_invalid",
]);
const UNREACHABLE_PREFIXES = ["dns_", "timeout_"];
const BLOCKED_REASONS = new Set([
  "path_not_allowed", "method_not_allowed", "unknown_service", "token_scope", "invalid_path",
  "invalid_query", "token_in_url", "header_control_characters", "request_too_large",
  "response_too_large", "redirect_limit", "redirect_leaks_secret", "feed_content_type",
]);
const BLOCKED_PREFIXES = ["deny_", "url_"];
// The page cannot reach or use the sidecar: it is down, restarted elsewhere, or refused the
// session (token, Host header or Origin checks).
const SIDECAR_REASONS = new Set(["host_not_allowed", "origin_not_allowed"]);
const SIDECAR_PREFIXES = ["sidecar_", "token_"];
// Statuses a gateway returns when it gets no response from the server behind it.
const GATEWAY_STATUSES = new Set([502, 503, 504]);

/** A failed request, classified for display. `reason` is the host or sidecar reason name. */
export class RequestFailure extends Error {
  constructor({ state, reason = "", status = 0, message = "" }) {
    super(message || reason || state);
    this.name = "RequestFailure";
    this.state = state;
    this.reason = reason;
    this.status = status;
  }
}

/** Return the panel state for a reason name, or null when the name is not a known one. */
export function stateForReason(reason) {
  if (!reason) {
    return null;
  }
  if (MISSING_REASONS.has(reason)) {
    return State.MISSING;
  }
  if (UNREACHABLE_REASONS.has(reason) || UNREACHABLE_PREFIXES.some((p) => reason.startsWith(p))) {
    return State.UNREACHABLE;
  }
  if (BLOCKED_REASONS.has(reason) || BLOCKED_PREFIXES.some((p) => reason.startsWith(p))) {
    return State.BLOCKED;
  }
  if (SIDECAR_REASONS.has(reason) || SIDECAR_PREFIXES.some((p) => reason.startsWith(p))) {
    return State.SIDECAR;
  }
  return null;
}

/**
 * Classify an error thrown by the bridge (KeysideError with .reason, or a TypeError when the
 * sidecar cannot be reached at all). A RequestFailure passes through unchanged.
 */
export function classifyError(error) {
  if (error instanceof RequestFailure) {
    return error;
  }
  if (error && error.name === "AbortError") {
    return new RequestFailure({ state: State.ERROR, reason: "aborted", message: "Stopped." });
  }
  const reason = typeof error?.reason === "string" ? error.reason : "";
  const status = Number.isInteger(error?.status) ? error.status : 0;
  const message = typeof error?.message === "string" ? error.message : String(error);
  if (!reason && error instanceof TypeError) {
    return new RequestFailure({
      state: State.SIDECAR, reason: "sidecar_unreachable",
      message: "The local API did not respond.",
    });
  }
  if (reason === "upstream_status" && (status === 401 || status === 403)) {
    return new RequestFailure({ state: State.INVALID, reason, status, message });
  }
  const state = stateForReason(reason) || stateForStatus(status) || State.ERROR;
  return new RequestFailure({ state, reason, status, message });
}

function stateForStatus(status) {
  if (status === 401 || status === 403) {
    return State.INVALID;
  }
  if (status === 429) {
    return State.RATE_LIMITED;
  }
  if (GATEWAY_STATUSES.has(status)) {
    return State.UNREACHABLE;
  }
  return null;
}

/**
 * Classify a non-2xx Response from the sidecar. The sidecar's own errors are JSON
 * {"error": {"reason", "message"}}; any other body came from the upstream, so a 401 or 403
 * there means the upstream rejected the key.
 */
export async function classifyResponse(response) {
  const status = response.status;
  const body = await readErrorBody(response);
  const sidecarError = body && typeof body.error === "object" && body.error !== null
    && typeof body.error.reason === "string" ? body.error : null;

  if (sidecarError) {
    const reason = sidecarError.reason;
    const message = typeof sidecarError.message === "string" ? sidecarError.message : reason;
    return new RequestFailure({ state: stateForSidecarError(reason, status), reason, status, message });
  }

  const upstreamMessage = upstreamErrorText(body);
  if (status === 401 || status === 403 || mentionsRejectedKey(status, upstreamMessage)) {
    return new RequestFailure({
      state: State.INVALID, reason: "upstream_status", status,
      message: upstreamMessage || `The service returned HTTP ${status}.`,
    });
  }
  return new RequestFailure({
    state: status === 429 ? State.RATE_LIMITED : State.ERROR,
    reason: "upstream_status", status,
    message: upstreamMessage || `The service returned HTTP ${status}.`,
  });
}

function stateForSidecarError(reason, status) {
  const known = stateForReason(reason);
  if (known) {
    return known;
  }
  // The feed proxy returns 502 upstream_status when the feed server returned an error status.
  // The server was reached, so this is not an offline case.
  if (reason === "upstream_status") {
    return State.ERROR;
  }
  if (status === 429) {
    return State.RATE_LIMITED;
  }
  return GATEWAY_STATUSES.has(status) ? State.UNREACHABLE : State.ERROR;
}

// FRED rejects a wrong or malformed key with status 400 and an error_message naming api_key.
function mentionsRejectedKey(status, message) {
  return status === 400 && /api[_ ]?key/i.test(message);
}

// Error bodies are read for their message only; at most this many characters are kept.
const MAX_ERROR_TEXT_CHARS = 300;

async function readErrorBody(response) {
  let text = "";
  try {
    text = await response.text();
  } catch {
    return null;
  }
  try {
    return JSON.parse(text);
  } catch {
    return { text: text.slice(0, MAX_ERROR_TEXT_CHARS) };
  }
}

function upstreamErrorText(body) {
  if (!body) {
    return "";
  }
  const candidates = [
    body.error_message, body.message, body.detail,
    typeof body.error === "string" ? body.error : body.error?.message,
    body.text,
  ];
  const found = candidates.find((value) => typeof value === "string" && value.trim());
  return found ? found.trim().slice(0, MAX_ERROR_TEXT_CHARS) : "";
}
