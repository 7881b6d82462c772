// The live feed, GET /v1/alerts/stream, read with fetch(): EventSource cannot send the
// Authorization header. Server-Sent Events are parsed here; after a dropped connection the
// feed reconnects with Last-Event-ID, so the server sends what was missed first.

const SILENCE_MS = 45000; // the server sends a comment every 15 s: silence this long is a dead line

export class Feed {
  constructor({ url, token, onEvent, onState }) {
    this.url = url;
    this.token = token;
    this.onEvent = onEvent;
    this.onState = onState;
    this.lastEventId = null;
    this.stopped = false;
    this.retryMs = 1000;
    this.controller = null;
    this.watchdog = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.watchdog);
    if (this.controller) this.controller.abort();
  }

  // Drop the current connection (as a network would); the feed reconnects by itself.
  drop() {
    if (this.controller) this.controller.abort();
  }

  alive() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.drop(), SILENCE_MS);
  }

  async connect() {
    let resumed = false;
    while (!this.stopped) {
      this.controller = new AbortController();
      const headers = { Accept: "text/event-stream", Authorization: `Bearer ${this.token}` };
      if (this.lastEventId !== null) headers["Last-Event-ID"] = this.lastEventId;
      let fatal = null;
      let cleanEnd = false;
      const opened = Date.now();
      try {
        if (!resumed) this.onState("connecting");
        const response = await fetch(this.url, {
          headers,
          signal: this.controller.signal,
          cache: "no-store",
        });
        if (response.status === 401 || response.status === 403) {
          fatal = response.status;
        } else if (!response.ok || !response.body) {
          throw new Error(`stream answered ${response.status}`);
        } else {
          this.onState("live");
          this.retryMs = 1000;
          this.alive();
          await this.read(response.body);
          cleanEnd = true;
        }
      } catch {
        // A dropped connection, an abort or a network error: reconnect below.
      }
      clearTimeout(this.watchdog);
      if (fatal !== null) {
        this.onState("refused", fatal);
        return;
      }
      if (this.stopped) return;
      // The server ends a stream after a while (STREAM_MAX_S): resume at once. After an error,
      // or a stream that ends as soon as it starts, wait longer each time.
      resumed = cleanEnd && Date.now() - opened > 500;
      if (resumed) continue;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, this.retryMs));
      this.retryMs = Math.min(this.retryMs * 2, 15000);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { id: null, type: "message", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      this.alive();
      buffer += value;
      // Lines end in CRLF, LF or CR; a CR at the very end may be half of a CRLF still coming.
      for (;;) {
        const match = /\r\n|\n|\r(?!$)/.exec(buffer);
        if (!match) break;
        const line = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        if (line === "") {
          if (event.data.length) {
            if (event.id !== null) this.lastEventId = event.id;
            this.onEvent({ id: event.id, type: event.type, data: event.data.join("\n") });
          }
          event = { id: null, type: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // a heartbeat comment
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let val = colon === -1 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "id") event.id = val;
        else if (field === "event") event.type = val;
        else if (field === "data") event.data.push(val);
        else if (field === "retry" && /^\d+$/.test(val)) this.retryMs = Number(val);
      }
    }
  }
}
