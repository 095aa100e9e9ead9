#!/usr/bin/env node
// An example Taskyard worker in Node.js: `node src/main.js --target 127.0.0.1:50051`.
//
// Task types:
//   node.echo    returns its payload.
//   node.resize  {width, height, steps?, step_ms?, fail_attempts?}: "resizes an image" in
//                `steps` passes, reporting progress after each; invalid dimensions fail
//                for good (non-retryable); the first `fail_attempts` attempts fail with a
//                retryable error, as a flaky storage backend would. Honours cancellation.
//
// SIGTERM or SIGINT drains: no new tasks, running ones get --grace seconds.

import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

import { NonRetryableError, TaskError, Worker } from './worker.js';

/** @param {import('./worker.js').TaskContext} ctx */
export async function echo(ctx) {
  return ctx.payload;
}

/** @param {import('./worker.js').TaskContext} ctx */
export async function resize(ctx) {
  const { width, height, steps = 4, step_ms: stepMs = 200, fail_attempts: failAttempts = 0 } = ctx.payload ?? {};
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new NonRetryableError(`width and height must be positive integers, got ${width}x${height}`, {
      type: 'InvalidDimensions',
    });
  }
  if (ctx.attempt <= failAttempts) {
    throw new TaskError(`storage unavailable on attempt ${ctx.attempt}`, { type: 'TransientStorageError' });
  }
  for (let step = 1; step <= steps; step += 1) {
    await ctx.sleep(stepMs); // rejects as soon as the task is cancelled
    ctx.progress((100 * step) / steps, `resize pass ${step} of ${steps}`, { step, totalSteps: steps });
  }
  return { width, height, thumbnail: `${Math.ceil(width / 4)}x${Math.ceil(height / 4)}`, attempt: ctx.attempt };
}

/** Register the example handlers on a worker. */
export function register(worker) {
  return worker.task('node.echo', echo).task('node.resize', resize);
}

/** Parse the command line shared by this example and the conformance worker. */
export function options(argv = process.argv.slice(2)) {
  const { values } = parseArgs({
    args: argv,
    options: {
      target: { type: 'string', default: process.env.TASKYARD_TARGET ?? '127.0.0.1:50051' },
      concurrency: { type: 'string', short: 'c', default: '8' },
      queues: { type: 'string', short: 'Q', default: 'default' },
      'worker-id': { type: 'string' },
      grace: { type: 'string', default: '30' },
    },
  });
  return {
    target: values.target,
    concurrency: Number(values.concurrency),
    queues: values.queues.split(','),
    workerId: values['worker-id'],
    shutdownGraceMs: Number(values.grace) * 1000,
  };
}

/** Run a worker until SIGTERM/SIGINT, then drain and exit. */
export async function serve(worker) {
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => worker.stop());
  await worker.run();
  worker.log('INFO', `stopped after ${worker.completed} tasks`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await serve(register(new Worker(options())));
}
