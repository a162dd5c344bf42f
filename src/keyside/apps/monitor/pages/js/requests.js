// Calls to keyed services and the feed proxy through the bridge. Every failure becomes a
// RequestFailure (see failure.js), so panels handle one error type.

import { api } from "/keyside/bridge.js";
import { classifyError, classifyResponse } from "./failure.js";

/** Send a request to `service` at `path` through the sidecar; return the Response when 2xx. */
export async function fetchService(service, path, init = {}) {
  let response;
  try {
    response = await api.fetch(service, path, init);
  } catch (error) {
    throw classifyError(error);
  }
  if (!response.ok) {
    throw await classifyResponse(response);
  }
  return response;
}

/** Like fetchService, and parse the body as JSON. */
export async function fetchServiceJson(service, path, init = {}) {
  const response = await fetchService(service, path, init);
  try {
    return await response.json();
  } catch (error) {
    throw classifyError({ reason: "invalid_json", message: `${service} did not return JSON: ${error.message}` });
  }
}

/** Fetch a feed through the sidecar's feed proxy; return its text. */
export async function fetchFeedText(url, init = {}) {
  let response;
  try {
    response = await api.feed(url, init);
  } catch (error) {
    throw classifyError(error);
  }
  if (!response.ok) {
    throw await classifyResponse(response);
  }
  return response.text();
}
