// The Connect protocol over fetch: unary JSON calls and server streams (docs/http.md).
//
// Unary: POST /taskyard.v1.<Service>/<Method> with a JSON body; a non-2xx answer is a
// JSON error {code, message, details}. Streams: the request and every message are
// enveloped (1 flag byte, 4-byte big-endian length, JSON); the last envelope has flag
// 0x02 and holds {} or {error}; a body that ends without it was cut off.

const END_STREAM = 0x02;
const TOKEN_KEY = "taskyard.token";

export class RpcError extends Error {
  constructor(code, message, reason = "", status = 0) {
    super(message);
    this.code = code; // Connect's code: "not_found", "permission_denied", …
    this.reason = reason; // google.rpc.ErrorInfo reason: "TASK_NOT_FOUND", …
    this.status = status;
  }
}

// The bearer token lives in this tab's sessionStorage: gone when the tab closes,
// never in a cookie (so no request is authenticated by accident).
export const auth = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

function headers(contentType) {
  const out = { "Content-Type": contentType, "Connect-Protocol-Version": "1" };
  if (auth.token) out.Authorization = `Bearer ${auth.token}`;
  return out;
}

// ErrorInfo is field 1 (reason, a string) of a protobuf message, base64 without padding.
function reasonOf(error) {
  for (const detail of error?.details || []) {
    if (detail.type !== "google.rpc.ErrorInfo") continue;
    const raw = atob(detail.value.replace(/-/g, "+").replace(/_/g, "/"));
    if (raw.charCodeAt(0) !== 0x0a) return "";
    let length = 0, shift = 0, i = 1;
    for (;;) {
      const byte = raw.charCodeAt(i++);
      length |= (byte & 0x7f) << shift;
      if (byte < 0x80) break;
      shift += 7;
    }
    return raw.slice(i, i + length);
  }
  return "";
}

function toError(body, status) {
  if (body && typeof body.code === "string") {
    return new RpcError(body.code, body.message || body.code, reasonOf(body), status);
  }
  return new RpcError("unknown", `HTTP ${status}`, "", status);
}

const path = (method) => `/taskyard.v1.${method}`;

// call("TaskService/GetTask", {id}) → the response message as JSON.
export async function call(method, request = {}, { signal } = {}) {
  const response = await fetch(path(method), {
    method: "POST",
    headers: headers("application/json"),
    body: JSON.stringify(request),
    signal,
  });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = null;
  }
  if (!response.ok) throw toError(body, response.status);
  return body;
}

function envelope(message) {
  const data = new TextEncoder().encode(JSON.stringify(message));
  const out = new Uint8Array(5 + data.length);
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

// for await (const message of stream("EventService/WatchEvents", {...}, {signal})) …
export async function* stream(method, request = {}, { signal } = {}) {
  const response = await fetch(path(method), {
    method: "POST",
    headers: headers("application/connect+json"),
    body: envelope(request),
    signal,
  });
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    throw toError(body, response.status);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = new Uint8Array(0);
  try {
    for (;;) {
      while (buffer.length >= 5) {
        const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.length);
        const flags = view.getUint8(0);
        const size = view.getUint32(1);
        if (buffer.length < 5 + size) break;
        const payload = buffer.subarray(5, 5 + size);
        buffer = buffer.slice(5 + size);
        const message = size ? JSON.parse(decoder.decode(payload)) : {};
        if (flags & END_STREAM) {
          if (message.error) throw toError(message.error, response.status);
          return;
        }
        yield message;
      }
      const { value, done } = await reader.read();
      if (done) throw new RpcError("unavailable", "the stream ended without its end message");
      const joined = new Uint8Array(buffer.length + value.length);
      joined.set(buffer);
      joined.set(value, buffer.length);
      buffer = joined;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}
