// AI brief panel: a short summary of the headlines, streamed token by token from an
// OpenAI-compatible chat completions endpoint. The request is a POST with "stream": true, and
// the response is server-sent events whose data is a JSON chunk, ending with "data: [DONE]".

import { el } from "./dom.js";
import { State } from "./failure.js";
import { fetchService } from "./requests.js";
import { SseParser, readChatEvent } from "./sse.js";

// Headlines sent to the model: enough for a summary, few enough for a fast response.
export const MAX_BRIEF_HEADLINES = 15;
// Maximum response length in tokens, passed to the API as max_tokens.
export const MAX_BRIEF_TOKENS = 400;

const SYSTEM_PROMPT = "You write a short, neutral news brief for a market dashboard. "
  + "Use at most five bullet points, each one sentence, starting with \"- \". "
  + "Use only the headlines given. Do not add facts.";

/** Return the chat messages asking for a brief of `headlines` ([{title, source}]). */
export function buildMessages(headlines) {
  const lines = headlines.slice(0, MAX_BRIEF_HEADLINES)
    .map((item, i) => `${i + 1}. ${item.title} (${item.source})`);
  return [
    { role: "system", content: SYSTEM_PROMPT },
    { role: "user", content: `Headlines:\n${lines.join("\n")}` },
  ];
}

/**
 * Stream a brief of `headlines` into `panel`, using the first provider in `providers`
 * ([{service, label, path, model, secret}]) that responds. A provider whose key is not set,
 * or that cannot be reached (a local Ollama that is not running), is skipped. A rejected key
 * stops the search, because the user set that key and needs to know it fails.
 * `signal` aborts the request and the stream.
 */
export async function streamBrief(panel, providers, headlines, signal) {
  if (headlines.length === 0) {
    panel.setEmpty("The brief is written once headlines have loaded.");
    return;
  }
  if (providers.length === 0) {
    panel.setEmpty("No AI provider is configured. Add services to [ui] ai_providers in keyside.toml.");
    return;
  }
  panel.setLoading("Writing the brief…");

  const skipped = [];
  for (const provider of providers) {
    let response;
    try {
      response = await fetchService(provider.service, provider.path, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify({
          model: provider.model,
          messages: buildMessages(headlines),
          stream: true,
          max_tokens: MAX_BRIEF_TOKENS,
          temperature: 0.3,
        }),
        signal,
      });
    } catch (failure) {
      if (SKIPPED_STATES.has(failure.state)) {
        skipped.push({ provider, failure });
        continue;
      }
      panel.serviceLabel = provider.label;
      panel.secret = provider.secret;
      panel.setFailure(failure);
      return;
    }
    await renderStream(panel, provider, response, signal);
    return;
  }
  // The first provider's failure sets the state, and so how soon the dashboard retries.
  panel.setFailure(skipped[0].failure, describeNoProvider(skipped));
}

// Failures that move on to the next provider instead of ending the brief.
const SKIPPED_STATES = new Set([State.MISSING, State.UNREACHABLE]);

function describeNoProvider(skipped) {
  const notes = skipped.map(({ provider, failure }) => (failure.state === State.MISSING
    ? `${provider.label}: no key set${provider.secret ? ` (${provider.secret})` : ""}.`
    : `${provider.label}: cannot be reached.`));
  const anyMissing = skipped.some((s) => s.failure.state === State.MISSING);
  return {
    text: anyMissing ? "No AI provider is available for the brief." : "No AI provider can be reached.",
    hint: notes.join(" "),
    actions: anyMissing ? ["settings", "retry"] : ["retry"],
  };
}

async function renderStream(panel, provider, response, signal) {
  const output = el("p", { className: "brief-text", attrs: { "aria-live": "polite", "aria-busy": "true" } });
  const text = document.createTextNode("");
  output.append(text);
  const source = el("p", { className: "brief-source" }, [
    `${provider.label} · `, el("code", { text: provider.model }),
  ]);
  panel.body.replaceChildren(output, source);
  panel.setData(`Writing with ${provider.label}…`);
  panel.root.dataset.stream = "streaming";

  const contentType = response.headers.get("content-type") || "";
  let ended = "complete";
  try {
    if (!contentType.includes("text/event-stream")) {
      // A server that ignores "stream": true returns one JSON object.
      const result = readChatEvent(await response.text());
      text.appendData(result.text || "");
      if (result.error) {
        ended = showStreamError(panel, result.error);
      }
    } else {
      ended = await readEvents(panel, response, text, signal);
    }
  } catch (error) {
    ended = error?.name === "AbortError" ? "stopped" : showStreamError(panel, error?.message || String(error));
  }
  output.setAttribute("aria-busy", "false");
  panel.root.dataset.stream = ended;
  if (ended === "complete" && !text.data.trim()) {
    panel.setEmpty(`${provider.label} returned an empty response.`);
    return;
  }
  panel.meta.textContent = ended === "stopped" ? "Stopped" : `Written by ${provider.label}`;
}

async function readEvents(panel, response, text, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      const events = done ? parser.push(decoder.decode()).concat(parser.finish()) : parser.push(decoder.decode(value, { stream: true }));
      for (const event of events) {
        const result = readChatEvent(event.data);
        if (result.done) {
          return "complete";
        }
        if (result.error) {
          return showStreamError(panel, result.error);
        }
        // Appending to one Text node keeps earlier tokens in place for screen readers and selection.
        text.appendData(result.text);
      }
      if (done) {
        return signal?.aborted ? "stopped" : "complete";
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

function showStreamError(panel, message) {
  panel.body.append(el("p", { className: "panel-note error", attrs: { role: "alert" }, text: `The stream ended with an error: ${message}` }));
  return "error";
}
