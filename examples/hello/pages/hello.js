// The whole hello app: store a token through the host, then call GitHub through the sidecar.
// The page never receives the stored token: the sidecar adds it to the request.

import { api, invoke } from "/keyside/bridge.js";

const tokenState = document.getElementById("token-state");
const tokenField = document.getElementById("token");
const greeting = document.getElementById("greeting");

async function showTokenState() {
  const secrets = await invoke("list_secrets", {});
  const token = secrets.find((secret) => secret.name === "GITHUB_TOKEN");
  tokenState.textContent = token?.configured ? "GITHUB_TOKEN is set." : "GITHUB_TOKEN is not set yet.";
}

async function saveToken() {
  const value = tokenField.value.trim();
  if (!value) {
    tokenState.textContent = "Paste a token first.";
    return;
  }
  try {
    await invoke("set_secret", { name: "GITHUB_TOKEN", value });
    tokenField.value = "";
    await showTokenState();
  } catch (error) {
    tokenState.textContent = `Saving failed: ${error.message} (reason: ${error.reason})`;
  }
}

async function sayHello() {
  greeting.textContent = "Asking GitHub…";
  try {
    const response = await api.fetch("github", "/user", { headers: { Accept: "application/vnd.github+json" } });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      const reason = body.error?.reason || `HTTP ${response.status}`;
      greeting.textContent = `GitHub did not answer with your profile (${reason}).`;
      return;
    }
    const user = await response.json();
    greeting.textContent = `Hello, ${user.name || user.login}!`;
  } catch (error) {
    greeting.textContent = `The request failed: ${error.message} (reason: ${error.reason || "unknown"})`;
  }
}

document.getElementById("save").addEventListener("click", saveToken);
document.getElementById("hello").addEventListener("click", sayHello);
showTokenState().catch((error) => {
  tokenState.textContent = `Could not read the token state (reason: ${error.reason || "unknown"}).`;
});
