"""The user flow and the "key is nowhere" proofs, shared by the browser and desktop end-to-end tests.

`UiPage` hides whether a page is driven by Playwright (browser mode, headless Chromium) or by
DevTools on a Qt WebEngine window (desktop mode). The flow uses only what the monitor pages
show a user: the settings cards (`article[data-secret=NAME]`, their field, buttons and status
message) and the dashboard panels (`#panel-*` with `data-state`).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Protocol

from e2e.cdp import CdpPage
from e2e.providers import BRIEF_TOKENS, QUOTE, FakeProviders

# Waits in the flow: a loopback round trip takes milliseconds, and the dashboard retries a panel
# whose key is missing every 5 s. This bounds a stuck page, it measures nothing.
WAIT_S = 30.0
POLL_S = 0.1

# Collects every string reachable from `window` (outside DOM nodes) that contains a needle,
# with the property path that leads to it.
FIND_IN_GLOBALS = """(needles) => {
  const found = [];
  const seen = new WeakSet();
  const queue = [[window, "window"]];
  let visited = 0;
  while (queue.length && visited < 60000) {
    const [value, path] = queue.shift();
    visited += 1;
    if (typeof value === "string") {
      for (const needle of needles) {
        if (value.includes(needle)) found.push(path);
      }
      continue;
    }
    if (value === null || (typeof value !== "object" && typeof value !== "function")) continue;
    if (seen.has(value) || value instanceof Node) continue;
    seen.add(value);
    let names = [];
    try { names = Object.getOwnPropertyNames(value); } catch (error) { continue; }
    for (const name of names) {
      let child;
      try { child = value[name]; } catch (error) { continue; }
      queue.push([child, path + "." + name]);
    }
  }
  return { found, visited };
}"""

# Everything a page can keep: Web Storage, IndexedDB contents and script-visible cookies.
DUMP_STORAGE = """async () => {
  const parts = [];
  for (const store of [localStorage, sessionStorage]) {
    for (let i = 0; i < store.length; i += 1) {
      const key = store.key(i);
      parts.push(key, store.getItem(key));
    }
  }
  const databases = indexedDB.databases ? await indexedDB.databases() : [];
  for (const info of databases) {
    const db = await new Promise((resolve, reject) => {
      const request = indexedDB.open(info.name);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    for (const name of db.objectStoreNames) {
      const rows = await new Promise((resolve) => {
        const request = db.transaction(name).objectStore(name).getAll();
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => resolve([]);
      });
      parts.push(info.name, name, JSON.stringify(rows));
    }
    db.close();
  }
  parts.push(document.cookie);
  return { text: parts.join("\\n"), localItems: localStorage.length, sessionItems: sessionStorage.length,
           databases: databases.map((d) => d.name) };
}"""

# The whole DOM as markup, plus what markup does not show: form field values.
DUMP_DOM = """() => {
  const values = [...document.querySelectorAll("input, textarea, select")].map((field) => field.value);
  return document.documentElement.outerHTML + "\\n" + values.join("\\n") + "\\n" + document.title;
}"""

# The sidecar session, read the way the bridge reads it; tests need it to search for the token.
READ_SESSION = """() => import("/keyside/transport.js").then((t) => t.send("local_api", {}))"""


class UiPage(Protocol):
    async def evaluate(self, function: str, arg: Any = None) -> Any: ...

    async def click(self, selector: str) -> None: ...

    async def click_button(self, container: str, text: str) -> None: ...

    async def type_into(self, selector: str, text: str) -> None: ...

    async def screenshot(self, path: Path) -> None: ...


class PlaywrightUiPage:
    """A Playwright page (async API)."""

    def __init__(self, page: Any):
        self.page = page

    async def evaluate(self, function: str, arg: Any = None) -> Any:
        return await self.page.evaluate(function, arg)

    async def click(self, selector: str) -> None:
        await self.page.locator(selector).click()

    async def click_button(self, container: str, text: str) -> None:
        await self.page.locator(container).get_by_role("button", name=text, exact=True).click()

    async def type_into(self, selector: str, text: str) -> None:
        await self.page.locator(selector).fill(text)

    async def screenshot(self, path: Path) -> None:
        await self.page.screenshot(path=str(path), full_page=True)


class CdpUiPage:
    """A Qt WebEngine page driven over DevTools; clicks and typing go through the real DOM events."""

    def __init__(self, page: CdpPage):
        self.page = page

    async def evaluate(self, function: str, arg: Any = None) -> Any:
        return await self.page.evaluate(f"({function})({json.dumps(arg)})")

    async def click(self, selector: str) -> None:
        clicked = await self.evaluate(
            "(s) => { const node = document.querySelector(s); node?.click(); return !!node; }", selector)
        if not clicked:
            raise AssertionError(f"nothing to click at {selector}")

    async def click_button(self, container: str, text: str) -> None:
        clicked = await self.evaluate("""([container, text]) => {
          const root = document.querySelector(container);
          const button = root && [...root.querySelectorAll("button")].find((b) => b.textContent.trim() === text);
          if (!button || button.disabled) return false;
          button.click();
          return true;
        }""", [container, text])
        if not clicked:
            raise AssertionError(f"no enabled button {text!r} in {container}")

    async def type_into(self, selector: str, text: str) -> None:
        focused = await self.evaluate("""(selector) => {
          const field = document.querySelector(selector);
          if (!field) return false;
          field.focus();
          field.select();
          return document.activeElement === field;
        }""", selector)
        if not focused:
            raise AssertionError(f"cannot focus {selector}")
        await self.page.insert_text(text)

    async def screenshot(self, path: Path) -> None:
        path.write_bytes(await self.page.screenshot())


async def wait_until(page: UiPage, function: str, arg: Any = None, *, timeout_s: float = WAIT_S,
                     description: str = "condition") -> Any:
    """Evaluate `function(arg)` in the page until it returns a truthy value; return that value."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Any = None
    while True:
        last = await page.evaluate(function, arg)
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {description}, last value {last!r}")
        await asyncio.sleep(POLL_S)


# -- settings window ----------------------------------------------------------------------

def card(name: str) -> str:
    return f'article.secret-card[data-secret="{name}"]'


async def wait_for_card(page: UiPage, name: str) -> None:
    await wait_until(page, "(s) => !!document.querySelector(s)", card(name), description=f"the {name} card")


async def card_message(page: UiPage, name: str) -> dict[str, str]:
    return await page.evaluate("""(name) => {
      const node = document.getElementById(`secret-${name}-message`);
      return { text: node ? node.textContent : "", kind: node ? (node.dataset.kind || "") : "" };
    }""", name)


async def run_card_action(page: UiPage, name: str, button: str, expect: str) -> dict[str, str]:
    """Press `button` on the card of secret `name` and wait until its message contains `expect`."""
    before = (await card_message(page, name))["text"]
    await page.click_button(card(name), button)
    return await wait_until(page, """([name, before, expect]) => {
      const node = document.getElementById(`secret-${name}-message`);
      const busy = node && node.closest("article").getAttribute("aria-busy") === "true";
      if (!node || busy || node.textContent === before || !node.textContent.includes(expect)) return null;
      return { text: node.textContent, kind: node.dataset.kind || "" };
    }""", [name, before, expect], description=f"{button} on {name} to report {expect!r}")


async def field_value(page: UiPage, name: str) -> str:
    return await page.evaluate("(name) => document.getElementById(`secret-${name}-value`).value", name)


async def enter_key(page: UiPage, name: str, value: str) -> None:
    await page.type_into(f"#secret-{name}-value", value)


async def is_configured(page: UiPage, name: str) -> bool:
    return await page.evaluate("(s) => document.querySelector(s)?.dataset.configured === 'true'", card(name))


async def save_key(page: UiPage, name: str, value: str) -> None:
    """Paste `value` for `name`, validate it and save it, checking what the page reports at each step."""
    await enter_key(page, name, value)
    validated = await run_card_action(page, name, "Validate", "Valid")
    assert validated["kind"] == "ok", validated
    saved = await run_card_action(page, name, "Save", "Saved")
    assert saved["kind"] == "ok", saved
    value = await field_value(page, name)
    assert value == "", f"{name}: the field still has {len(value)} characters after saving"
    # The card reloads the secret list after the message, so "Set" may show a moment later.
    await wait_until(page, "(s) => document.querySelector(s)?.dataset.configured === 'true'", card(name),
                     description=f"{name} shown as set after saving")


# -- dashboard ----------------------------------------------------------------------------

async def panel_state(page: UiPage, panel: str) -> str:
    return await page.evaluate("(id) => document.getElementById(id)?.dataset.state || ''", panel)


async def wait_for_panel(page: UiPage, panel: str, state: str, text: str | None = None) -> str:
    """Wait until panel `panel` is in `state` (and shows `text`); return the panel's text."""
    return await wait_until(page, """([id, state, text]) => {
      const node = document.getElementById(id);
      if (!node || node.dataset.state !== state) return null;
      const panelText = node.textContent;
      return text === null || panelText.includes(text) ? panelText : null;
    }""", [panel, state, text], description=f"{panel} in state {state!r}" + (f" showing {text!r}" if text else ""))


async def brief_text(page: UiPage) -> str:
    return await page.evaluate("() => document.querySelector('#panel-brief [data-role=body]')?.textContent || ''")


# -- proofs -------------------------------------------------------------------------------

async def find_in_page(page: UiPage, needles: list[str]) -> dict[str, Any]:
    """Return where any of `needles` shows up in the page: DOM, JS globals, storage."""
    dom = await page.evaluate(DUMP_DOM)
    globals_found = await page.evaluate(FIND_IN_GLOBALS, needles)
    storage = await page.evaluate(DUMP_STORAGE)
    return {
        "dom": [needle for needle in needles if needle in dom],
        "globals": globals_found["found"],
        "globals_visited": globals_found["visited"],
        "storage": [needle for needle in needles if needle in storage["text"]],
        "storage_summary": {k: storage[k] for k in ("localItems", "sessionItems", "databases")},
    }


def texts_containing(texts: dict[str, str], needles: list[str]) -> list[str]:
    """Return the names of the texts that contain any needle."""
    return sorted(name for name, text in texts.items() if any(needle in text for needle in needles))


# -- the shared flow ----------------------------------------------------------------------

# A key a user pastes by mistake: validated (and rejected) but never saved.
WRONG_KEY = "wrong-finnhub-key-000000"


async def enter_keys_through_settings(settings: UiPage, providers: FakeProviders) -> None:
    """Validate a wrong key, then validate and save the three real ones, holding the AI stream."""
    for name in providers.keys:
        await wait_for_card(settings, name)

    await enter_key(settings, "FINNHUB_API_KEY", WRONG_KEY)
    rejected = await run_card_action(settings, "FINNHUB_API_KEY", "Validate", "Invalid")
    assert rejected["kind"] == "error", rejected
    assert not await is_configured(settings, "FINNHUB_API_KEY"), "a rejected key was saved"

    await save_key(settings, "FINNHUB_API_KEY", providers.finnhub_key)
    await save_key(settings, "FRED_API_KEY", providers.fred_key)
    providers.hold_stream = True
    await save_key(settings, "GROQ_API_KEY", providers.groq_key)
    recheck = await run_card_action(settings, "GROQ_API_KEY", "Validate", "Saved key")
    assert "Valid" in recheck["text"], recheck


async def check_dashboard_with_keys(main: UiPage, providers: FakeProviders) -> None:
    """Check every panel shows the fakes' data and the brief renders each token as it arrives."""
    await main.click("[data-role=refresh-all]")
    await wait_for_panel(main, "panel-quotes", "data", f"{QUOTE['c']:.2f}")
    await wait_for_panel(main, "panel-series", "data")
    await wait_for_panel(main, "panel-headlines", "data", "Atom headline")

    # The fake holds back word N+1 until the page shows word N, so a page that waited for the
    # whole response would never show the first word.
    words = [token.strip(" -.") for token in BRIEF_TOKENS]
    for index, word in enumerate(words):
        brief = await wait_until(main, """(word) => {
          const text = document.querySelector("#panel-brief [data-role=body]")?.textContent || "";
          return text.includes(word) ? text : null;
        }""", word, description=f"brief word {word!r}")
        early = [later for later in words[index + 1:] if later in brief]
        assert early == [], f"words shown before the fake sent them: {early}"
        providers.release_token()
    await wait_for_panel(main, "panel-brief", "data")
    text = await brief_text(main)
    assert "Loopback markets were calm today" in text, text

    # Each key reached its own upstream, put there by the sidecar, and no other.
    for service, key in (("finnhub", providers.finnhub_key), ("fred", providers.fred_key),
                         ("groq", providers.groq_key)):
        assert providers.received_key(service, key), f"{service} never received its key"
    assert not providers.received_key("fred", providers.finnhub_key), "fred received the Finnhub key"
    assert not providers.received_key("groq", providers.fred_key), "groq received the FRED key"


async def check_window_capabilities(main: UiPage) -> None:
    """The dashboard window lacks the `secrets` capability, so it cannot store or list keys."""
    for command, args in (("set_secret", {"name": "FINNHUB_API_KEY", "value": "from-the-dashboard"}),
                          ("list_secrets", {})):
        reply = await main.evaluate("""([command, args]) => import("/keyside/bridge.js")
          .then((bridge) => bridge.invoke(command, args))
          .then((result) => ({ ok: true, result }), (error) => ({ ok: false, reason: error.reason }))""",
                                    [command, args])
        assert reply == {"ok": False, "reason": "window_not_allowed"}, (command, reply)


async def read_token(page: UiPage) -> str:
    """Return the sidecar token the way the bridge gets it, so the proofs can search for it."""
    session = await page.evaluate(READ_SESSION)
    assert session.get("ok"), session
    return session["result"]["token"]


async def check_pages_clean(pages: dict[str, UiPage], needles: list[str]) -> None:
    """Assert no needle is in any page's DOM, JS globals or storage."""
    for label, page in pages.items():
        found = await find_in_page(page, needles)
        assert found["dom"] == [], f"{label}: in the DOM"
        assert found["globals"] == [], f"{label}: in JS globals at {found['globals']}"
        assert found["globals_visited"] > 1000, f"{label}: the globals walk stopped early"
        assert found["storage"] == [], f"{label}: in storage {found['storage_summary']}"


# Screenshots of both windows in both modes. The folder is not in git.
ARTIFACTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts"


async def check_empty_dashboard(main: UiPage) -> None:
    """Wait for the dashboard of an empty vault, then check the window's capabilities."""
    await wait_for_panel(main, "panel-quotes", "missing")
    await wait_for_panel(main, "panel-headlines", "data", "First headline")
    await check_window_capabilities(main)


async def run_keys_flow(main: UiPage, settings: UiPage, providers: FakeProviders, mode: str) -> tuple[list[str], str]:
    """Enter the keys in settings, check the dashboard and prove that no page contains a key or the token.

    Screenshots go to ARTIFACTS as `<mode>-dashboard.png` and `<mode>-settings.png`. Return the
    secret values (the real keys and WRONG_KEY) and the sidecar token for the mode's own proofs.
    """
    await enter_keys_through_settings(settings, providers)
    await check_dashboard_with_keys(main, providers)

    ARTIFACTS.mkdir(exist_ok=True)
    await main.screenshot(ARTIFACTS / f"{mode}-dashboard.png")
    await settings.screenshot(ARTIFACTS / f"{mode}-settings.png")

    token = await read_token(main)
    secrets = [*providers.keys.values(), WRONG_KEY]
    await check_pages_clean({"main": main, "settings": settings}, [*secrets, token])
    return secrets, token
