// Test helpers: a real broker process on a random port, and a small TaskService client.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import * as grpc from '@grpc/grpc-js';

import { CHANNEL_OPTIONS, TaskServiceClient, fromPayload, toPayload } from '../src/protocol.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '..', '..', '..');
export const PYTHON = process.env.TASKYARD_PYTHON ?? path.join(REPO_ROOT, '.venv', 'bin', 'python');
const READY = /listening on [^:\s]+:(\d+)/;

/** The lines a stream has produced so far, and a way to wait for one. */
export class Lines {
  /** @param {import('node:stream').Readable} stream */
  constructor(stream) {
    this.lines = [];
    this.ended = false;
    this.waiters = new Set();
    const reader = readline.createInterface({ input: stream });
    reader.on('line', (line) => {
      this.lines.push(line);
      for (const check of this.waiters) check();
    });
    reader.on('close', () => {
      this.ended = true;
      for (const check of this.waiters) check();
    });
  }

  /**
   * Resolve with the match of the first line (from index `after` on) matching `pattern`.
   * @param {RegExp} pattern
   * @param {{after?: number, timeoutMs?: number}} [options]
   */
  wait(pattern, { after = 0, timeoutMs = 30_000 } = {}) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`no line matching ${pattern} within ${timeoutMs} ms`)), timeoutMs);
      const check = () => {
        for (const line of this.lines.slice(after)) {
          const match = pattern.exec(line);
          if (match) return done(null, match);
        }
        if (this.ended) done(new Error(`output ended before a line matched ${pattern}:\n${this.lines.join('\n')}`));
      };
      const done = (error, match) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (error) reject(error);
        else resolve(match);
      };
      this.waiters.add(check);
      check();
    });
  }
}

/** A broker process on 127.0.0.1, on a fresh SQLite file. start() again reuses the port. */
export class Broker {
  constructor(extraArgs = []) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'taskyard-node-'));
    this.db = `sqlite+aiosqlite:///${path.join(this.dir, 'x.db')}`;
    this.extraArgs = extraArgs;
    this.port = 0;
    this.process = null;
    this.output = null;
  }

  get target() {
    return `127.0.0.1:${this.port}`;
  }

  async start() {
    const args = ['-m', 'broker', 'broker', '--listen', `127.0.0.1:${this.port}`, '--db', this.db, ...this.extraArgs];
    const child = spawn(PYTHON, args, {
      cwd: REPO_ROOT,
      env: { ...process.env, PYTHONPATH: REPO_ROOT, PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.process = child;
    this.output = new Lines(child.stderr);
    const match = await this.output.wait(READY);
    this.port = Number(match[1]);
  }

  /** SIGKILL: no shutdown message, nothing released. */
  async kill() {
    await stopProcess(this.process, 'SIGKILL');
  }

  async stop() {
    if (this.process) await stopProcess(this.process, 'SIGTERM');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Send a signal and wait for the exit code.
 * @param {import('node:child_process').ChildProcess} child
 * @param {NodeJS.Signals} signal
 */
export function stopProcess(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill(signal);
  });
}

/** TaskService with promises, as a test sees it. */
export class Tasks {
  constructor(target) {
    this.client = new TaskServiceClient(target, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  }

  #unary(method, request) {
    return new Promise((resolve, reject) => {
      this.client[method](request, (error, response) => (error ? reject(error) : resolve(response)));
    });
  }

  async submit(type, payload, extra = {}) {
    const task = { type, payload: toPayload(payload), ...extra };
    return (await this.#unary('CreateTask', { task })).task;
  }

  async get(id) {
    return (await this.#unary('GetTask', { id })).task;
  }

  async cancel(id) {
    return (await this.#unary('CancelTask', { id })).task;
  }

  async attempts(id) {
    return (await this.#unary('ListTaskAttempts', { id })).attempts;
  }

  /** Every WatchTask message until the first that satisfies `until` (or the stream ends). */
  async watch(id, until = () => false) {
    const seen = [];
    const call = this.client.WatchTask({ id });
    try {
      for await (const message of call) {
        seen.push(message.task);
        if (until(message.task)) break;
      }
    } finally {
      call.cancel();
    }
    return seen;
  }

  /** Wait for a terminal state and return the task with its result decoded. */
  async finished(id) {
    await this.watch(id);
    const task = await this.get(id);
    return { ...task, value: fromPayload(task.result) };
  }

  close() {
    this.client.close();
  }
}
