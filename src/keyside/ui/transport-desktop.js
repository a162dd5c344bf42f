// Desktop transport for bridge.js: calls go over the Qt web channel to the "keyside" object
// that the shell registered for this window alone, so each call is bound to its window.
// pywebview sets up the channel after each page load and then fires "pywebviewready"; the
// object replies through its `reply` signal with {id, ok, result} or {id, ok: false, error}.

// pywebview injects the channel once the page has loaded; a window that has not done so by
// then has no working bridge.
const READY_TIMEOUT_MS = 15000;

const pending = new Map();
const connected = new WeakSet();
let nextId = 1;

function currentObject() {
  const channel = window.pywebview && window.pywebview._QWebChannel;
  return channel && channel.objects ? channel.objects.keyside || null : null;
}

function onReply(payload) {
  let reply;
  try {
    reply = JSON.parse(payload);
  } catch {
    return;
  }
  const resolve = pending.get(reply && reply.id);
  if (resolve) {
    pending.delete(reply.id);
    resolve(reply);
  }
}

function withReplies(object) {
  if (!connected.has(object)) {
    object.reply.connect(onReply);
    connected.add(object);
  }
  return object;
}

function bridgeObject() {
  const object = currentObject();
  if (object) {
    return Promise.resolve(withReplies(object));
  }
  return new Promise((resolve, reject) => {
    const onReady = () => {
      const found = currentObject();
      if (found) {
        clearTimeout(timer);
        window.removeEventListener("pywebviewready", onReady);
        resolve(withReplies(found));
      }
    };
    const timer = setTimeout(() => {
      window.removeEventListener("pywebviewready", onReady);
      reject(new Error("bridge_unavailable"));
    }, READY_TIMEOUT_MS);
    window.addEventListener("pywebviewready", onReady);
  });
}

/** Send one call; resolve with the reply {ok, result} or {ok: false, error: {reason, message}}. */
export async function send(command, args) {
  let object;
  try {
    object = await bridgeObject();
  } catch {
    return {
      ok: false,
      error: { reason: "bridge_unavailable", message: "This window has no keyside bridge.", fix: "Open the page from `keyside run`." },
    };
  }
  const id = nextId++;
  return new Promise((resolve) => {
    pending.set(id, resolve);
    object.invoke(JSON.stringify({ id, command, args }));
  });
}
