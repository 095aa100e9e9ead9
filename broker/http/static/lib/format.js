// Formatting of the proto3 JSON mapping: fields at their default value are absent
// (treat as zero or empty), 64-bit integers are strings, enums are full names,
// Timestamps RFC 3339, Durations "1.5s", bytes base64.

export const STATES = [
  "SCHEDULED", "PENDING", "RUNNING", "RETRYING", "SUCCEEDED", "FAILED", "CANCELLED", "DEAD",
  "EXPIRED", "BLOCKED", "SKIPPED",
];
// SKIPPED is final for the task (only its workflow's retry brings it back).
export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED", "DEAD", "EXPIRED", "SKIPPED"]);
export const RETRYABLE = new Set(["FAILED", "DEAD", "CANCELLED", "EXPIRED"]);
export const WAITING = ["SCHEDULED", "PENDING", "RETRYING"];

export const int = (value) => Number(value || 0);
export const state = (value) => (value || "").replace(/^TASK_STATE_/, "") || "UNSPECIFIED";
export const enumName = (value, prefix) =>
  (value || "").replace(prefix, "").toLowerCase().replace(/_/g, " ");

export function seconds(duration) {
  if (!duration) return 0;
  return Number(String(duration).replace(/s$/, ""));
}

export function duration(secs) {
  if (secs == null || Number.isNaN(secs)) return "–";
  if (secs < 0.001) return `${Math.round(secs * 1e6)} µs`;
  if (secs < 1) return `${(secs * 1000).toFixed(secs < 0.01 ? 2 : 0)} ms`;
  if (secs < 60) return Number.isInteger(secs) ? `${secs} s` : `${secs.toFixed(secs < 10 ? 2 : 1)} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ${Math.round(secs % 60)} s`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ${Math.round((secs % 3600) / 60)} min`;
  return `${Math.floor(secs / 86400)} d ${Math.round((secs % 86400) / 3600)} h`;
}

const local = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit",
});

export function time(value, zone) {
  if (!value) return "–";
  const date = new Date(value);
  if (!zone) return local.format(date);
  return new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZone: zone, timeZoneName: "short",
  }).format(date);
}

export function ago(value, now = Date.now()) {
  if (!value) return "–";
  const secs = Math.max(0, (now - new Date(value).getTime()) / 1000);
  if (secs < 1) return "just now";
  return `${duration(Math.round(secs))} ago`;
}

export const count = (n) => int(n).toLocaleString("en-US");

function bytesLabel(n) {
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// A Payload: {json: <any>} | {binary: base64, contentType} | absent.
export function payload(value) {
  if (!value || (!("json" in value) && !("binary" in value))) {
    return { kind: "none", text: "none" };
  }
  if ("json" in value) return { kind: "json", text: JSON.stringify(value.json, null, 2) };
  const size = Math.floor((value.binary.length * 3) / 4) - (value.binary.match(/=+$/)?.[0].length || 0);
  const type = value.contentType || "application/octet-stream";
  return { kind: "binary", text: `binary, ${bytesLabel(size)}, ${type}`, size, type };
}

// The W3C traceparent's trace id: version-traceid-parentid-flags.
export function traceId(task) {
  const parent = task?.traceContext?.traceparent || "";
  const parts = parent.split("-");
  return parts.length === 4 ? parts[1] : "";
}

export function labels(map) {
  return Object.entries(map || {}).map(([k, v]) => `${k}=${v}`);
}
