// One EventService.WatchEvents stream per tab, shared by every page (docs/dashboard.md).
//
// Browsers allow about six HTTP/1.1 connections per origin across all tabs, so pages
// never open their own event streams: they subscribe here. The hub reconnects after a
// failure, resuming after the last sequence it saw (stream_id + after_sequence); when
// the broker says events were lost (a gap) or the hub had to start afresh, subscribers
// get GAP and refetch instead of trusting their state.

import { stream, RpcError } from "./connect.js";

export const GAP = Symbol("gap");

class EventHub {
  constructor() {
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.status = "off"; // off | connecting | live | retrying | refused
    this.request = null;
    this.controller = null;
    this.streamId = "";
    this.sequence = 0;
    this.received = 0;
  }

  // fn(events | GAP) is called with each batch; returns the unsubscribe function.
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn) {
    this.statusListeners.add(fn);
    fn(this.status);
    return () => this.statusListeners.delete(fn);
  }

  setStatus(status) {
    this.status = status;
    for (const fn of this.statusListeners) fn(status);
  }

  emit(batch) {
    for (const fn of [...this.listeners]) {
      try {
        fn(batch);
      } catch (error) {
        console.warn("event subscriber failed", error);
      }
    }
  }

  // request: the WatchEvents filter (queues for a queue-limited caller, else {}).
  start(request) {
    this.stop();
    this.request = request;
    this.controller = new AbortController();
    this.run(this.controller.signal);
  }

  stop() {
    this.controller?.abort();
    this.controller = null;
    this.streamId = "";
    this.sequence = 0;
    this.setStatus("off");
  }

  async run(signal) {
    let delay = 500;
    while (!signal.aborted) {
      this.setStatus(this.streamId ? "retrying" : "connecting");
      try {
        const resume = this.streamId
          ? { streamId: this.streamId, afterSequence: String(this.sequence) }
          : {};
        for await (const message of stream(
          "EventService/WatchEvents",
          { ...this.request, ...resume },
          { signal },
        )) {
          const fresh = message.streamId !== this.streamId;
          this.streamId = message.streamId;
          this.sequence = Number(message.sequence || 0);
          if (this.status !== "live") {
            this.setStatus("live");
            delay = 500;
            if (fresh) this.emit(GAP); // a new numbering: whatever we showed may be stale
          }
          const events = message.events || [];
          if (!events.length) continue;
          this.received += events.length;
          if (events.some((e) => e.gap)) this.emit(GAP);
          const real = events.filter((e) => !e.gap);
          if (real.length) this.emit(real);
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof RpcError && ["permission_denied", "unauthenticated"].includes(error.code)) {
          this.setStatus("refused");
          return;
        }
      }
      if (signal.aborted) return;
      this.setStatus("retrying");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }
}

export const hub = new EventHub();

// Small predicates over the proto3 JSON of an Event.
export const taskIdOf = (e) => e.taskState?.taskId || e.taskProgress?.taskId || "";
export const queueOf = (e) =>
  e.taskState?.queue || e.taskProgress?.queue || e.scheduleFire?.queue || "";
