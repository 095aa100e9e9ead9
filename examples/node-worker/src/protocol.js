// The Taskyard protocol for Node: stubs loaded at run time from the repository's
// protos/ directory (nothing generated, nothing copied), plus conversions between
// JavaScript values and the wire's Payload, Duration and Timestamp messages.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Where the .proto files live: `protos/` at the repository root, or $TASKYARD_PROTOS. */
export const PROTO_ROOT = process.env.TASKYARD_PROTOS ?? path.resolve(here, '..', '..', '..', 'protos');

// keepCase keeps the .proto field names (task_id, lease_id), so this code reads like
// the .proto files and docs/protocol.md. oneofs adds a virtual field naming the set
// member of each oneof (`kind` on LeaseRequest/LeaseResponse, `outcome` on
// Completion, `data` on Payload). Unset message fields decode as null.
const definition = protoLoader.loadSync(
  ['taskyard/v1/worker_service.proto', 'taskyard/v1/task_service.proto'],
  {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  },
);
const v1 = /** @type {any} */ (grpc.loadPackageDefinition(definition)).taskyard.v1;

/** Client constructor for taskyard.v1.WorkerService (the Lease stream). */
export const WorkerServiceClient = v1.WorkerService;
/** Client constructor for taskyard.v1.TaskService (submit, get, watch, cancel). */
export const TaskServiceClient = v1.TaskService;

/** Channel options shared by the worker and tests: keepalive and prompt reconnects. */
export const CHANNEL_OPTIONS = {
  'grpc.max_receive_message_length': 32 * 1024 * 1024,
  'grpc.max_send_message_length': 32 * 1024 * 1024,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  'grpc.keepalive_permit_without_calls': 1,
  // The channel's own reconnect backoff defaults to 1 s growing to 120 s; the worker
  // runs its own backoff with jitter, so the channel should not add minutes to it.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 5_000,
};

/**
 * Encode a JavaScript value as a Payload: Buffers and typed arrays as `binary`,
 * anything else as JSON (after a JSON round trip, so Dates and toJSON apply).
 * `undefined` means "no payload".
 * @param {unknown} value
 * @returns {object|null}
 */
export function toPayload(value) {
  if (value === undefined) return {};
  if (value instanceof Uint8Array) {
    return { binary: Buffer.from(value), content_type: 'application/octet-stream' };
  }
  const text = JSON.stringify(value);
  if (text === undefined) {
    throw new TypeError(`a ${typeof value} is not JSON-serialisable`);
  }
  return { json: toValue(JSON.parse(text), 'value') };
}

/**
 * Decode a Payload: JSON values as plain JavaScript, binary as a Buffer, unset as null.
 * @param {any} payload
 * @returns {unknown}
 */
export function fromPayload(payload) {
  if (!payload) return null;
  if (payload.data === 'json') return fromValue(payload.json);
  if (payload.data === 'binary') return payload.binary;
  return null;
}

// protobufjs bundles the well-known types with camelCase field names (numberValue,
// structValue), whatever keepCase says for our own files.

/**
 * A JSON value as a google.protobuf.Value.
 * @param {unknown} value
 * @param {string} where
 * @returns {object}
 */
export function toValue(value, where) {
  if (value === null) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'boolean') return { boolValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (typeof value === 'number') {
    if (Number.isInteger(value) && !Number.isSafeInteger(value)) {
      throw new TypeError(`${where} is ${value}, beyond what a JSON number holds exactly; send it as a string`);
    }
    return { numberValue: value };
  }
  if (Array.isArray(value)) {
    return { listValue: { values: value.map((item, i) => toValue(item, `${where}[${i}]`)) } };
  }
  if (typeof value === 'object') {
    const fields = {};
    for (const [key, item] of Object.entries(value)) fields[key] = toValue(item, `${where}.${key}`);
    return { structValue: { fields } };
  }
  throw new TypeError(`${where} is a ${typeof value}, which JSON cannot hold`);
}

/**
 * A google.protobuf.Value as a JSON value.
 * @param {any} value
 * @returns {unknown}
 */
export function fromValue(value) {
  switch (value?.kind) {
    case 'boolValue':
      return value.boolValue;
    case 'numberValue':
      return value.numberValue;
    case 'stringValue':
      return value.stringValue;
    case 'listValue':
      return (value.listValue.values ?? []).map(fromValue);
    case 'structValue':
      return Object.fromEntries(
        Object.entries(value.structValue.fields ?? {}).map(([k, v]) => [k, fromValue(v)]),
      );
    default:
      return null;
  }
}

/**
 * A google.protobuf.Duration in milliseconds; null when unset.
 * @param {any} duration
 * @returns {number|null}
 */
export function durationMs(duration) {
  if (!duration) return null;
  return Number(duration.seconds) * 1000 + Number(duration.nanos) / 1e6;
}

/**
 * Milliseconds (0 or more) as a google.protobuf.Duration.
 * @param {number} ms
 * @returns {{seconds: string, nanos: number}}
 */
export function toDuration(ms) {
  const seconds = Math.floor(ms / 1000);
  const nanos = Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6));
  return { seconds: String(seconds), nanos };
}

/**
 * A google.protobuf.Timestamp as a Date; null when unset.
 * @param {any} timestamp
 * @returns {Date|null}
 */
export function toDate(timestamp) {
  if (!timestamp) return null;
  return new Date(Number(timestamp.seconds) * 1000 + Math.floor(Number(timestamp.nanos) / 1e6));
}

/**
 * The google.rpc.ErrorInfo reason of a failed call (e.g. `HANDSHAKE_REQUIRED`), or
 * the status code's name when the broker attached none.
 * @param {any} error a grpc-js ServiceError
 * @returns {string}
 */
export function errorReason(error) {
  const raw = error?.metadata?.get?.('grpc-status-details-bin')?.[0];
  if (raw) {
    // google.rpc.Status { repeated Any details = 3 }, Any { bytes value = 2 },
    // ErrorInfo { string reason = 1 }: three nested length-delimited fields.
    for (const detail of fields(Buffer.from(raw), 3)) {
      for (const value of fields(detail, 2)) {
        const [reason] = fields(value, 1);
        if (reason) return reason.toString('utf8');
      }
    }
  }
  const name = Object.entries(grpc.status).find(([, code]) => code === error?.code);
  return name ? name[0] : 'UNKNOWN';
}

/**
 * The length-delimited fields numbered `wanted` in a serialized protobuf message.
 * @param {Buffer} buf
 * @param {number} wanted
 * @returns {Buffer[]}
 */
function fields(buf, wanted) {
  const out = [];
  let pos = 0;
  const varint = () => {
    let value = 0;
    for (let shift = 0; pos < buf.length; shift += 7) {
      const byte = buf[pos++];
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) break;
    }
    return value;
  };
  while (pos < buf.length) {
    const key = varint();
    const wire = key % 8;
    if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const len = varint();
      if (Math.floor(key / 8) === wanted) out.push(buf.subarray(pos, pos + len));
      pos += len;
    } else break;
  }
  return out;
}
