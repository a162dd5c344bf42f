// Browser-mode transport for bridge.js: each call is a same-origin POST to /keyside/ipc.
// The page server checks the session cookie, the Origin header and X-Keyside-IPC, and takes
// the calling window from the port it listens on, so nothing in the body can claim another window.

const IPC_PATH = "/keyside/ipc";

/** Send one call; resolve with the reply {ok, result} or {ok: false, error: {reason, message}}. */
export async function send(command, args) {
  let response;
  try {
    response = await fetch(IPC_PATH, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Keyside-IPC": "1" },
      body: JSON.stringify({ command, args }),
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
    });
  } catch {
    return {
      ok: false,
      error: { reason: "host_unreachable", message: "The keyside host did not respond.", fix: "Check that `keyside run` is still running." },
    };
  }
  try {
    return await response.json();
  } catch {
    return {
      ok: false,
      error: { reason: "invalid_reply", message: `The keyside host responded with HTTP ${response.status} and no JSON reply.` },
    };
  }
}
