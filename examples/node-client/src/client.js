// A small TaskService client for Node.js: stubs loaded at run time from the
// repository's protos/ directory, JSON payloads in and out.

import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const here = path.dirname(fileURLToPath(import.meta.url));
const PROTO_ROOT = process.env.TASKYARD_PROTOS ?? path.resolve(here, '..', '..', '..', 'protos');

const definition = protoLoader.loadSync('taskyard/v1/task_service.proto', {
  includeDirs: [PROTO_ROOT],
  keepCase: true, // field names as in the .proto files
  longs: String,
  enums: String, // TASK_STATE_RUNNING rather than 3
  defaults: true,
  oneofs: true,
});
const TaskService = /** @type {any} */ (grpc.loadPackageDefinition(definition)).taskyard.v1.TaskService;

export const TERMINAL = new Set([
  'TASK_STATE_SUCCEEDED',
  'TASK_STATE_FAILED',
  'TASK_STATE_CANCELLED',
  'TASK_STATE_DEAD',
  'TASK_STATE_EXPIRED',
]);

export class TaskClient {
  /** @param {string} target the broker's host:port */
  constructor(target) {
    this.stub = new TaskService(target, grpc.credentials.createInsecure());
  }

  /**
   * Submit a task; resolves once the broker has durably committed it.
   * @param {string} type
   * @param {unknown} payload any JSON value
   * @param {{queue?: string, priority?: number, max_attempts?: number, labels?: Record<string, string>}} [options]
   * @param {string} [requestId] idempotency key: a repeat returns the original task
   */
  async submit(type, payload, options = {}, requestId = '') {
    const task = { type, payload: { json: toValue(payload) }, ...options };
    return (await this.#call('CreateTask', { task, request_id: requestId })).task;
  }

  /** The task with its payload and result. */
  async get(id) {
    return (await this.#call('GetTask', { id, view: 'TASK_VIEW_FULL' })).task;
  }

  async cancel(id, reason = '') {
    return (await this.#call('CancelTask', { id, reason })).task;
  }

  /**
   * Every state change and progress report of a task, ending after the terminal state.
   * @param {string} id
   * @returns {AsyncGenerator<any>}
   */
  async *watch(id) {
    const call = this.stub.WatchTask({ id });
    try {
      for await (const message of call) yield message.task;
    } finally {
      call.cancel();
    }
  }

  close() {
    this.stub.close();
  }

  #call(method, request) {
    return new Promise((resolve, reject) => {
      this.stub[method](request, (error, response) => (error ? reject(error) : resolve(response)));
    });
  }
}

/** The JSON value a Payload carries (null for none or for binary data). */
export function payloadValue(payload) {
  return payload?.data === 'json' ? fromValue(payload.json) : null;
}

// protobufjs bundles google.protobuf.Value with camelCase field names.

/** A JSON value as a google.protobuf.Value. */
export function toValue(value) {
  if (value === null || value === undefined) return { nullValue: 'NULL_VALUE' };
  if (typeof value === 'boolean') return { boolValue: value };
  if (typeof value === 'number') return { numberValue: value };
  if (typeof value === 'string') return { stringValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  return { structValue: { fields: Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toValue(v)])) } };
}

/** A google.protobuf.Value as a JSON value. */
export function fromValue(value) {
  switch (value?.kind) {
    case 'boolValue':
    case 'numberValue':
    case 'stringValue':
      return value[value.kind];
    case 'listValue':
      return value.listValue.values.map(fromValue);
    case 'structValue':
      return Object.fromEntries(Object.entries(value.structValue.fields).map(([k, v]) => [k, fromValue(v)]));
    default:
      return null;
  }
}
