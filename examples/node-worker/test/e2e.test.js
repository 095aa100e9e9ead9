// End to end: the example worker against a real broker (the repository's Python).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { register } from '../src/main.js';
import { errorReason, toDate } from '../src/protocol.js';
import { Retry, TaskError, Worker } from '../src/worker.js';
import { Broker, Lines, REPO_ROOT, Tasks, stopProcess } from './helpers.js';

const MAIN = path.join(REPO_ROOT, 'examples', 'node-worker', 'src', 'main.js');
const quiet = () => {};

describe('the example worker, in process', () => {
  let broker;
  let tasks;
  let worker;
  let running;

  before(async () => {
    broker = new Broker();
    await broker.start();
    tasks = new Tasks(broker.target);
    worker = register(new Worker({ target: broker.target, concurrency: 4, workerId: 'node-e2e', log: quiet }));
    // Asks for its own retry delay on the first attempt: ctx.retry throws a Retry.
    worker.task('test.retry_after', (ctx) => {
      if (ctx.attempt === 1) ctx.retry(ctx.payload.delay_ms, { message: 'slow down', type: 'RateLimited' });
      return { attempt: ctx.attempt };
    });
    const connected = new Promise((resolve) => worker.once('connected', resolve));
    running = worker.run();
    await connected;
  });

  after(async () => {
    worker.stop();
    await running;
    tasks.close();
    await broker.stop();
  });

  test('a handshake the broker refuses is an error, not an endless reconnect', async () => {
    const bad = register(new Worker({ target: broker.target, workerId: 'not a valid id!', log: quiet }));
    await assert.rejects(bad.run(), (error) => errorReason(error) === 'HANDSHAKE_REQUIRED');
  });

  test('node.echo returns its JSON payload unchanged', async () => {
    const payload = { text: 'héllo', n: 3, ratio: 2.5, flags: [true, false, null], nested: { list: [1, 'a'] } };
    const task = await tasks.submit('node.echo', payload);
    const done = await tasks.finished(task.id);
    assert.equal(done.state, 'TASK_STATE_SUCCEEDED');
    assert.deepEqual(done.value, payload);
    assert.equal(done.worker_id, 'node-e2e');
    assert.equal(done.attempt, 1);
  });

  test('node.resize reports each progress step to watchers before its result', async () => {
    const task = await tasks.submit('node.resize', { width: 800, height: 600, steps: 3, step_ms: 150 });
    const seen = await tasks.watch(task.id);
    const steps = seen.filter((t) => t.progress).map((t) => t.progress.step);
    assert.deepEqual([...new Set(steps)].filter((s) => s > 0), [1, 2, 3]);
    assert.equal(seen.at(-1).state, 'TASK_STATE_SUCCEEDED');
    const done = await tasks.finished(task.id);
    assert.deepEqual(done.value, { width: 800, height: 600, thumbnail: '200x150', attempt: 1 });
  });

  test('invalid input fails for good: non-retryable, after one attempt', async () => {
    const task = await tasks.submit('node.resize', { width: 0, height: 600 });
    const done = await tasks.finished(task.id);
    assert.equal(done.state, 'TASK_STATE_FAILED');
    assert.equal(done.attempt, 1);
    assert.equal(done.error.type, 'InvalidDimensions');
    assert.equal(done.error.non_retryable, true);
  });

  test('a retryable failure is retried by the broker and then succeeds', async () => {
    const task = await tasks.submit('node.resize', { width: 40, height: 40, steps: 1, step_ms: 1, fail_attempts: 1 });
    const done = await tasks.finished(task.id);
    assert.equal(done.state, 'TASK_STATE_SUCCEEDED');
    assert.equal(done.attempt, 2);
    assert.equal(done.value.attempt, 2);
    assert.equal(done.error.type, 'TransientStorageError'); // the last failure is kept
    assert.equal(done.error.non_retryable, false);
  });

  test('a handler-chosen retry delay replaces the policy backoff', async () => {
    // The policy alone would wait an hour; the handler asks for 1.2 s.
    const retryPolicy = { initial_backoff: { seconds: 3600 }, max_backoff: { seconds: 7200 } };
    const task = await tasks.submit('test.retry_after', { delay_ms: 1200 }, { retry_policy: retryPolicy });
    const done = await tasks.finished(task.id);
    assert.equal(done.state, 'TASK_STATE_SUCCEEDED');
    assert.deepEqual(done.value, { attempt: 2 });
    const [first, second] = await tasks.attempts(task.id);
    assert.equal(first.error.type, 'RateLimited');
    assert.equal(first.error.message, 'slow down');
    assert.ok(toDate(second.start_time) - toDate(first.end_time) >= 1200, 'retried before the delay');
  });

  test('Retry and TaskError refuse a negative delay', () => {
    assert.throws(() => new Retry(-1), RangeError);
    assert.throws(() => new TaskError('x', { retryDelayMs: Number.NaN }), RangeError);
    assert.equal(new Retry(250).retryDelayMs, 250);
  });

  test('cancelling a running task aborts its handler and the task ends CANCELLED', async () => {
    const task = await tasks.submit('node.resize', { width: 10, height: 10, steps: 1000, step_ms: 50 });
    await tasks.watch(task.id, (t) => t.progress?.step >= 1);
    const requested = await tasks.cancel(task.id);
    assert.equal(requested.cancel_requested, true);
    const done = await tasks.finished(task.id);
    assert.equal(done.state, 'TASK_STATE_CANCELLED');
    assert.equal(done.error.type, 'Cancelled');
    assert.match(done.error.message, /handler stopped/);
    assert.ok(done.progress.step < 1000, 'the handler kept running after the cancellation');
  });
});

describe('batching', () => {
  test('tasks that wait arrive in one message and their results leave together', async () => {
    const broker = new Broker();
    await broker.start();
    const tasks = new Tasks(broker.target);
    try {
      const ids = [];
      for (let i = 0; i < 12; i += 1) ids.push((await tasks.submit('node.echo', { i }, { queue: 'batch' })).id);
      const worker = register(new Worker({ target: broker.target, queues: ['batch'], concurrency: 12, log: quiet }));
      const received = [];
      const sent = [];
      worker.on('assignments', (n) => received.push(n));
      worker.on('sent', (message) => sent.push(message));
      const running = worker.run();
      for (const id of ids) assert.equal((await tasks.finished(id)).state, 'TASK_STATE_SUCCEEDED');
      worker.stop();
      await running;
      assert.deepEqual(received, [12]);
      const completions = sent.filter((m) => m.completions).map((m) => m.completions.completions.length);
      assert.equal(completions.reduce((a, b) => a + b, 0), 12);
      assert.ok(Math.max(...completions) > 1, `one completion per message: ${completions}`);
      const credits = sent.filter((m) => m.credit).map((m) => m.credit.credits);
      assert.ok(Math.max(...credits) > 1, `one credit per message: ${credits}`);
    } finally {
      tasks.close();
      await broker.stop();
    }
  });
});

describe('the example worker as a process', () => {
  let broker;
  let tasks;

  before(async () => {
    broker = new Broker();
    await broker.start();
    tasks = new Tasks(broker.target);
  });

  after(async () => {
    tasks.close();
    await broker.stop();
  });

  function startWorker(name) {
    const child = spawn(process.execPath, [MAIN, '--target', broker.target, '--worker-id', name, '-c', '2', '--grace', '20'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.output = new Lines(child.stderr);
    return child;
  }

  test('SIGTERM drains: the running task finishes and the process exits 0', async () => {
    const child = startWorker('node-drain');
    await child.output.wait(/connected to/);
    const task = await tasks.submit('node.resize', { width: 20, height: 20, steps: 4, step_ms: 250 });
    // Its first progress: the handler runs (RUNNING alone may come before the worker
    // even read the assignment, which a worker already draining releases instead).
    await tasks.watch(task.id, (t) => (t.progress?.step ?? 0) >= 1);
    const drained = child.output.wait(/drained; closing the lease stream/);
    child.kill('SIGTERM');
    await drained;
    assert.equal(await stopProcess(child, 'SIGTERM'), 0);
    const done = await tasks.get(task.id);
    assert.equal(done.state, 'TASK_STATE_SUCCEEDED');
    assert.equal(done.attempt, 1);
  });

  test('after a broker restart the worker reconnects and delivers its in-flight result once', async () => {
    const child = startWorker('node-restart');
    await child.output.wait(/connected to/);
    const task = await tasks.submit('node.resize', { width: 20, height: 20, steps: 2, step_ms: 400 });
    await tasks.watch(task.id, (t) => t.state === 'TASK_STATE_RUNNING');
    await broker.kill();
    const seen = child.output.lines.length;
    await broker.start(); // same port, same database
    await child.output.wait(/connected to/, { after: seen });
    const fresh = new Tasks(broker.target);
    try {
      const done = await fresh.finished(task.id);
      assert.equal(done.state, 'TASK_STATE_SUCCEEDED');
      assert.equal(done.attempt, 1, 'the task ran again instead of being re-adopted');
      const next = await fresh.finished((await fresh.submit('node.echo', 'after')).id);
      assert.equal(next.value, 'after');
    } finally {
      fresh.close();
      child.kill('SIGTERM');
      assert.equal(await stopProcess(child, 'SIGTERM'), 0);
    }
  });
});
