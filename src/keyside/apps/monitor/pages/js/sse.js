// A server-sent events parser for streamed chat completions (the text/event-stream format
// defined in the HTML standard). Chunks may split a line or an event anywhere.

export class SseParser {
  constructor() {
    this.buffer = "";
    this.data = [];
    this.eventType = "";
  }

  /** Add decoded text; return the events it completes as [{type, data}]. */
  push(text) {
    this.buffer += text;
    const events = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) {
        break;
      }
      // A lone "\r" at the end may be the first half of "\r\n"; wait for the next chunk.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) {
        break;
      }
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      const event = this.processLine(line);
      if (event) {
        events.push(event);
      }
    }
    return events;
  }

  /** Flush at the end of the stream; a final event without its blank line still counts. */
  finish() {
    const events = this.buffer ? this.push("\n") : [];
    const last = this.processLine("");
    return last ? [...events, last] : events;
  }

  processLine(line) {
    if (line === "") {
      if (this.data.length === 0) {
        this.eventType = "";
        return null;
      }
      const event = { type: this.eventType || "message", data: this.data.join("\n") };
      this.data = [];
      this.eventType = "";
      return event;
    }
    if (line.startsWith(":")) {
      return null;  // a comment, often sent as a keep-alive
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) {
      value = value.slice(1);
    }
    if (field === "data") {
      this.data.push(value);
    } else if (field === "event") {
      this.eventType = value;
    }
    return null;
  }
}

/**
 * Read the text of one chat completion stream event.
 * Returns {done: true} for "[DONE]", {text} for a content delta (possibly ""), or
 * {error} when the event carries an API error object.
 */
export function readChatEvent(data) {
  if (data.trim() === "[DONE]") {
    return { done: true };
  }
  let payload;
  try {
    payload = JSON.parse(data);
  } catch {
    return { text: "" };
  }
  if (payload && payload.error) {
    const error = payload.error;
    return { error: typeof error === "string" ? error : String(error.message || error.code || "error") };
  }
  const choice = Array.isArray(payload?.choices) ? payload.choices[0] : null;
  const content = choice?.delta?.content ?? choice?.message?.content ?? "";
  return { text: typeof content === "string" ? content : "" };
}
