// A Taskyard worker for Node.js, written from protos/ and docs/protocol.md alone.
//
// One Lease stream per worker. Everything on it is batched: all the heartbeats that
// are due, all the completions that finished in the same turn of the event loop and
// one credit message for them go out together. Completions are kept until the broker
// acknowledges them and are sent again after a reconnect, so a broker restart loses
// no result.

import { EventEmitter } from 'node:events';
import os from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';

import * as grpc from '@grpc/grpc-js';

import {
  CHANNEL_OPTIONS,
  WorkerServiceClient,
  durationMs,
  errorReason,
  toDuration,
  fromPayload,
  toDate,
  toPayload,
} from './protocol.js';

export const SDK_VERSION = '0.1.0';
const MAX_ITEMS_PER_MESSAGE = 500;
const PROGRESS_MIN_INTERVAL_MS = 100;
const BACKOFF_INITIAL_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const DEFAULT_HEARTBEAT_MS = 3_000;

/**
 * A failure a handler throws on purpose: its `type`, `nonRetryable` and `retryDelayMs`
 * reach the broker. `retryDelayMs` asks for the next attempt after that many milliseconds
 * instead of the retry policy's backoff (capped at the policy's max_backoff; the attempt
 * still counts against max_attempts).
 */
export class TaskError extends Error {
  /**
   * @param {string} message
   * @param {{type?: string, nonRetryable?: boolean, details?: string, retryDelayMs?: number}} [options]
   */
  constructor(message, { type, nonRetryable = false, details, retryDelayMs } = {}) {
    super(message);
    if (retryDelayMs !== undefined && !(Number.isFinite(retryDelayMs) && retryDelayMs >= 0)) {
      throw new RangeError(`retryDelayMs must be 0 or more, got ${retryDelayMs}`);
    }
    this.name = type ?? 'TaskError';
    this.nonRetryable = nonRetryable;
    this.details = details;
    this.retryDelayMs = retryDelayMs;
  }
}

/**
 * Fail this attempt and have the next one run after `delayMs`, e.g. an upstream's
 * Retry-After (Celery's `self.retry(countdown=...)`); `ctx.retry(delayMs)` throws one.
 */
export class Retry extends TaskError {
  /**
   * @param {number} delayMs
   * @param {{message?: string, type?: string}} [options]
   */
  constructor(delayMs, { message, type = 'Retry' } = {}) {
    super(message ?? `retry requested in ${delayMs} ms`, { type, retryDelayMs: delayMs });
  }
}

/** A failure that retrying cannot fix: the task becomes FAILED at once. */
export class NonRetryableError extends TaskError {
  /**
   * @param {string} message
   * @param {{type?: string, details?: string}} [options]
   */
  constructor(message, options = {}) {
    super(message, { type: 'NonRetryableError', ...options, nonRetryable: true });
  }
}

/**
 * What a handler receives.
 * @typedef {object} TaskContext
 * @property {string} taskId
 * @property {string} leaseId
 * @property {string} type
 * @property {string} queue
 * @property {number} priority
 * @property {Record<string, string>} labels
 * @property {number} attempt This attempt's number, from 1.
 * @property {number} maxAttempts
 * @property {unknown} payload The input: JSON value, Buffer, or null.
 * @property {string} workerId
 * @property {Date|null} deadline The hard deadline (execution timeout), if any.
 * @property {Date|null} softDeadline When to wrap up, if any.
 * @property {AbortSignal} signal Aborted when the task must stop (cancelled, lease lost,
 *   timed out, worker shutting down past its grace period); `signal.reason.code` says why.
 * @property {AbortSignal} softDeadlineSignal Aborted at the soft deadline.
 * @property {(percent?: number, message?: string, steps?: {step?: number, totalSteps?: number}) => void} progress
 *   Report progress; reports are coalesced, so calling it often is cheap.
 * @property {(ms: number) => Promise<void>} sleep A sleep that rejects when `signal` aborts.
 * @property {(delayMs: number, options?: {message?: string, type?: string}) => never} retry
 *   Throws a `Retry`: this attempt fails and the next runs after `delayMs`.
 */

/** @typedef {(ctx: TaskContext) => unknown | Promise<unknown>} Handler */

/** Why a running task was told to stop; the `reason` of TaskContext.signal. */
export class StopRequest extends Error {
  /** @param {'REQUESTED'|'LEASE_LOST'|'TIMED_OUT'|'SHUTDOWN'} code */
  constructor(code) {
    super(`task stopped: ${code}`);
    this.name = 'AbortError';
    this.code = code;
  }
}

export class Worker extends EventEmitter {
  /** @type {Map<string, Handler>} */
  #handlers = new Map();
  /** @type {Map<string, Job>} task id → running job (lost ones stay until their handler settles) */
  #running = new Map();
  /** @type {Set<Job>} superseded attempts whose handlers have not settled yet */
  #superseded = new Set();
  /** @type {Map<string, object>} task id → completion not yet acknowledged */
  #unacked = new Map();
  #outbox = new Outbox();
  #call = null;
  #client = null;
  #draining = false;
  #drained = false;
  /** The broker said no assignment follows on this stream (its `drain`). */
  #brokerDrained = false;
  #graceTimer = null;
  #heartbeatTimer = null;
  #flushScheduled = false;
  #welcomeHeartbeatMs = DEFAULT_HEARTBEAT_MS;
  #wakeBackoff = () => {};

  /**
   * @param {object} options
   * @param {string} [options.target] The broker's host:port.
   * @param {string[]} [options.queues] Queues to take tasks from.
   * @param {number} [options.concurrency] Tasks run at once; the broker never sends more.
   * @param {string} [options.workerId] Shown in the broker; defaults to host-pid.
   * @param {number} [options.shutdownGraceMs] How long running tasks get to finish on stop().
   * @param {(level: string, message: string) => void} [options.log]
   */
  constructor({
    target = '127.0.0.1:50051',
    queues = ['default'],
    concurrency = 10,
    workerId = `${os.hostname()}-${process.pid}`,
    shutdownGraceMs = 30_000,
    log = stderrLog,
  } = {}) {
    super();
    if (!(concurrency >= 1)) throw new RangeError(`concurrency must be at least 1, got ${concurrency}`);
    this.target = target;
    this.queues = queues;
    this.concurrency = concurrency;
    this.workerId = workerId;
    this.shutdownGraceMs = shutdownGraceMs;
    this.log = log;
    this.completed = 0;
  }

  /**
   * Register the handler of a task type. It returns (or resolves to) the result, a
   * JSON value or a Buffer; it throws to fail the attempt.
   * @param {string} type
   * @param {Handler} handler
   * @returns {this}
   */
  task(type, handler) {
    if (this.#handlers.has(type)) throw new Error(`a handler for ${type} is already registered`);
    this.#handlers.set(type, handler);
    return this;
  }

  /** Serve until stop() is called and the drain completes. */
  async run() {
    if (this.#handlers.size === 0) throw new Error('no handlers registered; call worker.task(type, fn)');
    this.#client = new WorkerServiceClient(this.target, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    let failures = 0;
    try {
      while (!this.#drained) {
        const { established, error } = await this.#session();
        if (this.#drained) break;
        if (error) {
          const reason = errorReason(error);
          this.log('WARNING', `lease stream to ${this.target} failed: ${reason}: ${error.details ?? error.message}`);
          if (!established && reason === 'HANDSHAKE_REQUIRED') throw error; // our configuration is wrong
        }
        if (established) failures = 0;
        // Exponential backoff with jitter: 50-100% of min(max, initial * 2^failures).
        const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** failures) * (0.5 + Math.random() / 2);
        failures += 1;
        await this.#sleepUnlessDrained(backoff);
      }
    } finally {
      for (const job of this.#running.values()) job.controller.abort(new StopRequest('SHUTDOWN'));
      clearTimeout(this.#graceTimer);
      clearTimeout(this.#heartbeatTimer);
      this.#client.close();
    }
  }

  /** Begin a graceful drain: take no more tasks, finish or hand back the rest. */
  stop() {
    if (this.#draining) return;
    this.log('INFO', `draining: ${this.#running.size} tasks in flight, up to ${this.shutdownGraceMs / 1000}s`);
    this.#draining = true;
    this.#outbox.credits = 0;
    this.#outbox.drain = true; // the broker takes back the credits it still holds
    this.#graceTimer = setTimeout(() => this.#giveUpRemaining(), this.shutdownGraceMs);
    this.#checkDrained();
  }

  // --- The session ---------------------------------------------------------------------

  /** @returns {Promise<{established: boolean, error: any}>} */
  #session() {
    return new Promise((resolve) => {
      const call = this.#client.Lease();
      let established = false;
      let error = null;
      call.on('data', (message) => {
        if (established) return this.#dispatch(message);
        if (message.kind !== 'welcome') return call.cancel();
        established = true;
        this.#call = call;
        this.#welcomed(message.welcome);
      });
      call.on('error', (e) => {
        error = e;
      });
      call.on('status', () => {
        if (this.#call === call) this.#call = null;
        clearTimeout(this.#heartbeatTimer);
        resolve({ established, error });
      });
      call.write({ hello: this.#hello() });
    });
  }

  #hello() {
    const held = [];
    for (const job of this.#running.values()) {
      if (!job.lost) held.push({ task_id: job.taskId, lease_id: job.leaseId });
    }
    for (const c of this.#unacked.values()) held.push({ task_id: c.task_id, lease_id: c.lease_id });
    this.#outbox = new Outbox();
    // A drain lasts for the stream it came on; a draining worker drains the new one.
    this.#outbox.drain = this.#draining;
    this.#brokerDrained = false;
    return {
      worker_id: this.workerId,
      task_types: [...this.#handlers.keys()].sort(),
      queues: this.queues,
      sdk_language: 'node',
      sdk_version: SDK_VERSION,
      credits: this.#draining ? 0 : Math.max(this.concurrency - this.#busy(), 0),
      held_leases: held,
    };
  }

  #welcomed(welcome) {
    this.#welcomeHeartbeatMs = durationMs(welcome.heartbeat_interval) || DEFAULT_HEARTBEAT_MS;
    for (const ref of welcome.lost_leases) {
      const job = this.#running.get(ref.task_id);
      if (job && job.leaseId === ref.lease_id && !job.lost) {
        this.log('WARNING', `lease on task ${ref.task_id} was lost while disconnected; abandoning it`);
        this.#abandon(job, 'LEASE_LOST');
      }
      if (this.#unacked.get(ref.task_id)?.lease_id === ref.lease_id) this.#unacked.delete(ref.task_id);
    }
    this.log('INFO', `connected to ${this.target} as ${this.workerId} (${this.#running.size} running)`);
    this.emit('connected', welcome);
    const now = Date.now();
    for (const job of this.#running.values()) {
      job.heartbeatMs = job.ownHeartbeatMs ?? this.#welcomeHeartbeatMs;
      job.nextHeartbeatAt = now + job.heartbeatMs;
    }
    // Outcomes the broker has not acknowledged go out again.
    this.#outbox.completions = [...this.#unacked.values()];
    this.#armHeartbeats();
    this.#scheduleFlush();
    this.#checkDrained();
  }

  #dispatch(message) {
    switch (message.kind) {
      case 'assignments':
        this.emit('assignments', message.assignments.assignments.length);
        for (const a of message.assignments.assignments) this.#start(a);
        break;
      case 'heartbeat_acks':
        this.#heartbeatAcks(message.heartbeat_acks.acks);
        break;
      case 'completion_acks':
        this.#completionAcks(message.completion_acks.acks);
        break;
      case 'cancellations':
        this.#cancellations(message.cancellations.cancellations);
        break;
      case 'shutdown':
        this.log('INFO', `broker is shutting down: ${message.shutdown.message}`);
        break;
      case 'drain':
        // No assignment follows on this stream (our own drain's answer, or an operator's).
        this.log(this.#draining ? 'INFO' : 'WARNING', `the broker stopped assigning (${message.drain.message})`);
        this.#brokerDrained = true;
        this.#outbox.credits = 0;
        this.#scheduleFlush(); // a drained worker may close its stream now
        break;
      default:
        break; // a kind newer than this worker: ignore it
    }
  }

  // --- Broker answers and requests --------------------------------------------------------

  #heartbeatAcks(acks) {
    for (const ack of acks) {
      const job = this.#running.get(ack.task_id);
      if (!job || job.leaseId !== ack.lease_id || job.lost) continue;
      if (ack.error) {
        this.log('WARNING', `lost the lease on task ${job.taskId} (${ack.error.reason}); abandoning it`);
        this.#abandon(job, 'LEASE_LOST');
      } else {
        job.ctx.leaseExpireTime = toDate(ack.lease_expire_time);
        if (ack.cancel_requested) this.#cancel(job);
      }
    }
  }

  #completionAcks(acks) {
    for (const ack of acks) {
      if (this.#unacked.get(ack.task_id)?.lease_id === ack.lease_id) this.#unacked.delete(ack.task_id);
      if (ack.error) {
        this.log(
          'WARNING',
          `broker discarded the outcome of task ${ack.task_id}: ${ack.error.message} (${ack.error.reason})`,
        );
      }
    }
    this.emit('acked', acks.length);
    this.#checkDrained();
  }

  #cancellations(items) {
    for (const item of items) {
      const job = this.#running.get(item.task_id);
      if (!job || job.leaseId !== item.lease_id || job.lost) continue;
      if (item.reason === 'CANCEL_REASON_LEASE_LOST') {
        this.log('WARNING', `broker revoked the lease on task ${job.taskId}; abandoning it`);
        this.#abandon(job, 'LEASE_LOST');
      } else if (item.reason === 'CANCEL_REASON_TIMED_OUT') {
        this.log('WARNING', `task ${job.taskId} ran past its execution timeout; stopping it`);
        this.#abandon(job, 'TIMED_OUT');
      } else {
        this.#cancel(job);
      }
    }
  }

  /** Cancellation requested: stop the handler and report the attempt as cancelled. */
  #cancel(job) {
    if (job.cancelRequested) return;
    job.cancelRequested = true;
    job.controller.abort(new StopRequest('REQUESTED'));
  }

  /** The lease is gone: stop the handler and report nothing for it. */
  #abandon(job, code) {
    job.lost = true;
    this.#outbox.heartbeats.delete(job.taskId);
    job.controller.abort(new StopRequest(code));
  }

  // --- Running handlers -----------------------------------------------------------------

  #start(assignment) {
    const ref = { task_id: assignment.task_id, lease_id: assignment.lease_id };
    if (this.#draining) {
      this.#outbox.releases.push(ref);
      this.#scheduleFlush();
      return;
    }
    const previous = this.#running.get(assignment.task_id);
    if (previous) {
      // The broker leases a task to one holder at a time: a new lease means the one
      // this worker still runs is gone (it expired while we were slow or paused).
      this.log('WARNING', `task ${previous.taskId} was assigned again; abandoning its previous lease`);
      this.#abandon(previous, 'LEASE_LOST');
      this.#superseded.add(previous);
    }
    const job = new Job(assignment, this);
    job.ownHeartbeatMs = durationMs(assignment.heartbeat_interval);
    job.heartbeatMs = job.ownHeartbeatMs || this.#welcomeHeartbeatMs;
    job.nextHeartbeatAt = Date.now() + job.heartbeatMs;
    this.#running.set(job.taskId, job);
    this.#armHeartbeats();
    this.#execute(job);
  }

  async #execute(job) {
    const completion = { task_id: job.taskId, lease_id: job.leaseId };
    const handler = this.#handlers.get(job.ctx.type);
    try {
      if (!handler) throw new TaskError(`this worker has no handler for task type ${job.ctx.type}`, { type: 'LookupError' });
      const value = await handler(job.ctx);
      try {
        completion.result = toPayload(value);
      } catch (error) {
        completion.failure = { type: 'ResultNotSerializable', message: String(error.message), details: '', non_retryable: true };
      }
    } catch (error) {
      if (job.cancelRequested) {
        completion.cancelled = { message: `handler stopped: ${error?.message ?? error}` };
      } else {
        completion.failure = failureOf(error);
      }
    }
    this.#finish(job, completion);
  }

  #finish(job, completion) {
    job.close();
    if (job.progressTimer) {
      // Progress still held back by the rate limit goes out before the result.
      clearTimeout(job.progressTimer);
      if (!job.lost) this.#queueProgress(job);
    } else if (job.lost) {
      this.#outbox.heartbeats.delete(job.taskId);
    }
    if (this.#running.get(job.taskId) === job) this.#running.delete(job.taskId);
    this.#superseded.delete(job);
    if (!job.lost) {
      this.#unacked.set(job.taskId, completion);
      this.#outbox.completions.push(completion);
      this.completed += 1;
    }
    if (!this.#draining && !this.#brokerDrained) this.#outbox.credits += 1;
    this.#scheduleFlush();
    this.#checkDrained();
  }

  // --- Heartbeats and progress ------------------------------------------------------------

  #armHeartbeats() {
    clearTimeout(this.#heartbeatTimer);
    if (!this.#call) return;
    let next = Infinity;
    for (const job of this.#running.values()) if (!job.lost) next = Math.min(next, job.nextHeartbeatAt);
    if (next === Infinity) return;
    this.#heartbeatTimer = setTimeout(() => this.#beat(), Math.max(0, next - Date.now()));
  }

  #beat() {
    const now = Date.now();
    for (const job of this.#running.values()) {
      // Heartbeats due within a quarter interval go now too, so that they share messages.
      if (job.lost || job.nextHeartbeatAt - job.heartbeatMs / 4 > now) continue;
      if (!this.#outbox.heartbeats.has(job.taskId)) {
        this.#outbox.heartbeats.set(job.taskId, { task_id: job.taskId, lease_id: job.leaseId });
      }
      job.nextHeartbeatAt = now + job.heartbeatMs;
    }
    this.#scheduleFlush();
    this.#armHeartbeats();
  }

  /**
   * Called by TaskContext.progress; not part of the public surface.
   * @param {Job} job
   * @param {object} progress
   */
  _report(job, progress) {
    if (job.lost || this.#running.get(job.taskId) !== job) return;
    job.progress = progress;
    if (job.progressTimer) return;
    const wait = job.progressSentAt + PROGRESS_MIN_INTERVAL_MS - Date.now();
    if (wait <= 0) this.#queueProgress(job);
    else job.progressTimer = setTimeout(() => this.#queueProgress(job), wait);
  }

  #queueProgress(job) {
    job.progressTimer = null;
    if (!job.progress || job.lost) return;
    this.#outbox.heartbeats.set(job.taskId, { task_id: job.taskId, lease_id: job.leaseId, progress: job.progress });
    job.progressSentAt = Date.now();
    job.nextHeartbeatAt = job.progressSentAt + job.heartbeatMs; // progress is a heartbeat
    this.#scheduleFlush();
  }

  // --- Writing ----------------------------------------------------------------------------

  #scheduleFlush() {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // setImmediate runs after the current I/O phase: every completion, heartbeat and
    // credit produced in this turn of the event loop rides in the same messages.
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #flush() {
    const call = this.#call;
    if (!call) return; // kept for the next session (completions) or rebuilt by it
    for (const message of this.#outbox.messages()) {
      call.write(message);
      this.emit('sent', message);
    }
    // Only after the broker's drain: then no assignment can still be on its way.
    if (this.#drained && this.#brokerDrained) {
      this.log('INFO', 'drained; closing the lease stream');
      this.#call = null; // nothing more to write; the broker ends the call
      call.end();
    }
  }

  // --- Draining ---------------------------------------------------------------------------

  #giveUpRemaining() {
    for (const job of this.#running.values()) {
      if (!job.lost) {
        this.log('WARNING', `task ${job.taskId} did not finish within the grace period; releasing it`);
        this.#outbox.releases.push({ task_id: job.taskId, lease_id: job.leaseId });
        this.#abandon(job, 'SHUTDOWN');
      }
    }
    this.#running.clear(); // a handler that ignores its signal cannot be waited for
    this.#superseded.clear();
    if (this.#unacked.size > 0) {
      // Shutdown must be bounded even when the broker is unreachable: these leases
      // expire and their tasks run again elsewhere.
      this.log('WARNING', `${this.#unacked.size} outcomes not acknowledged by the broker; giving up on them`);
      this.#unacked.clear();
    }
    this.#checkDrained();
  }

  #checkDrained() {
    if (this.#draining && !this.#drained && this.#busy() === 0 && this.#unacked.size === 0) {
      this.#drained = true;
      clearTimeout(this.#graceTimer);
      this.#wakeBackoff();
    }
    this.#scheduleFlush();
  }

  /** Handlers still holding a slot, including superseded ones. */
  #busy() {
    return this.#running.size + this.#superseded.size;
  }

  async #sleepUnlessDrained(ms) {
    const controller = new AbortController();
    this.#wakeBackoff = () => controller.abort();
    if (this.#drained) return;
    await delay(ms, undefined, { signal: controller.signal }).catch(() => {});
  }
}

/** One running attempt. */
class Job {
  /** @param {any} assignment @param {Worker} worker */
  constructor(assignment, worker) {
    this.taskId = assignment.task_id;
    this.leaseId = assignment.lease_id;
    this.controller = new AbortController();
    this.softController = new AbortController();
    this.lost = false;
    this.cancelRequested = false;
    this.progress = null;
    this.progressSentAt = 0;
    this.progressTimer = null;
    this.heartbeatMs = DEFAULT_HEARTBEAT_MS;
    this.ownHeartbeatMs = null;
    this.nextHeartbeatAt = 0;
    const softDeadline = toDate(assignment.soft_deadline);
    this.softTimer = softDeadline
      ? setTimeout(() => this.softController.abort(new Error('soft deadline')), Math.max(0, softDeadline - Date.now()))
      : null;
    let payload;
    let decoded = false;
    const signal = this.controller.signal;
    const job = this;
    /** @type {TaskContext} */
    this.ctx = {
      taskId: this.taskId,
      leaseId: this.leaseId,
      type: assignment.type,
      queue: assignment.queue,
      priority: assignment.priority,
      labels: { ...assignment.labels },
      attempt: assignment.attempt,
      maxAttempts: assignment.max_attempts,
      get payload() {
        if (!decoded) {
          payload = fromPayload(assignment.payload);
          decoded = true;
        }
        return payload;
      },
      workerId: worker.workerId,
      createTime: toDate(assignment.create_time),
      leaseExpireTime: toDate(assignment.lease_expire_time),
      deadline: toDate(assignment.deadline),
      softDeadline,
      signal,
      softDeadlineSignal: this.softController.signal,
      progress(percent, message, { step, totalSteps } = {}) {
        const last = job.progress ?? { percent: 0, message: '', step: 0, total_steps: 0 };
        worker._report(job, {
          percent: percent ?? last.percent,
          message: message ?? last.message,
          step: step ?? last.step,
          total_steps: totalSteps ?? last.total_steps,
        });
      },
      sleep: (ms) => delay(ms, undefined, { signal }),
      retry(delayMs, options) {
        throw new Retry(delayMs, options);
      },
    };
  }

  close() {
    clearTimeout(this.softTimer);
  }
}

/** What goes out on the next flush. */
class Outbox {
  constructor() {
    /** @type {Map<string, object>} one heartbeat per lease per message */
    this.heartbeats = new Map();
    this.completions = [];
    this.credits = 0;
    this.releases = [];
    this.drain = false;
  }

  /** Drain into LeaseRequest messages: a drain first, heartbeats (last progress) before results. */
  messages() {
    const out = this.drain ? [{ drain: { message: 'worker stopping' } }] : [];
    for (const heartbeats of chunks([...this.heartbeats.values()])) out.push({ heartbeats: { heartbeats } });
    for (const completions of chunks(this.completions)) out.push({ completions: { completions } });
    if (this.credits > 0) out.push({ credit: { credits: this.credits } });
    for (const leases of chunks(this.releases)) out.push({ releases: { leases } });
    this.heartbeats = new Map();
    this.completions = [];
    this.credits = 0;
    this.releases = [];
    this.drain = false;
    return out;
  }
}

function chunks(items) {
  const out = [];
  for (let i = 0; i < items.length; i += MAX_ITEMS_PER_MESSAGE) out.push(items.slice(i, i + MAX_ITEMS_PER_MESSAGE));
  return out;
}

/** A thrown value as a Failure: type from the error's name, retryable unless marked. */
function failureOf(error) {
  if (error instanceof Error) {
    const failure = {
      type: error.name || 'Error',
      message: error.message,
      details: error.details ?? error.stack ?? '',
      non_retryable: Boolean(error.nonRetryable),
    };
    const delayMs = error.retryDelayMs;
    if (Number.isFinite(delayMs) && delayMs >= 0) failure.retry_delay = toDuration(delayMs);
    return failure;
  }
  return { type: 'Error', message: String(error), details: '', non_retryable: false };
}

/** The default logger: `<time> <LEVEL> taskyard.worker: <message>` on stderr. */
export function stderrLog(level, message) {
  process.stderr.write(`${new Date().toISOString()} ${level} taskyard.worker: ${message}\n`);
}
