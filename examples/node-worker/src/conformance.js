#!/usr/bin/env node
// The conformance suite's task types (tests/conformance/), the same as in
// tests/conformance/python_worker.py. Each handler appends
// `<event> <task_id> <attempt> <pid> [extra]` to the file named by TASKYARD_TEST_RECORD,
// so the suite can count executions from outside the process.
//
//   conformance.echo         returns its payload
//   conformance.sleep        {seconds: s | [s1, s2, ...]}: sleeps s (per attempt; the last
//                            entry repeats), then returns {attempt, worker}
//   conformance.fail         {non_retryable: bool}: fails with type ConformanceError
//   conformance.retry_after  {delay: s, succeed_on: n = 2, type = 'RateLimited'}: attempts
//                            before n fail asking for the next attempt after `delay` s
//                            (ctx.retry); attempt n returns {attempt}
//   conformance.wait_cancel  runs until told to stop (cancelled, timed out, lease lost)

import { appendFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

import { options, serve } from './main.js';
import { TaskError, Worker } from './worker.js';

function record(event, ctx, ...extra) {
  const file = process.env.TASKYARD_TEST_RECORD;
  if (file) appendFileSync(file, `${[event, ctx.taskId, ctx.attempt, process.pid, ...extra].join(' ')}\n`);
}

function recordBatch(size) {
  const file = process.env.TASKYARD_TEST_RECORD;
  if (file) appendFileSync(file, `batch - - ${process.pid} ${size}\n`);
}

/** Register the conformance task types on a worker. */
export function registerConformance(worker) {
  worker.on('assignments', (size) => {
    worker.log('INFO', `received ${size} assignments`);
    recordBatch(size);
  });
  worker.task('conformance.echo', async (ctx) => ctx.payload);
  worker.task('conformance.sleep', async (ctx) => {
    const seconds = [ctx.payload?.seconds ?? 0.1].flat();
    const wait = seconds[Math.min(ctx.attempt, seconds.length) - 1];
    record('start', ctx);
    worker.log('INFO', `conformance: started task ${ctx.taskId} attempt ${ctx.attempt}`);
    await ctx.sleep(wait * 1000);
    worker.log('INFO', `conformance: finished task ${ctx.taskId} attempt ${ctx.attempt}`);
    record('end', ctx);
    return { attempt: ctx.attempt, worker: worker.workerId };
  });
  worker.task('conformance.fail', async (ctx) => {
    record('start', ctx);
    throw new TaskError(`failure on attempt ${ctx.attempt}`, {
      type: 'ConformanceError',
      nonRetryable: Boolean(ctx.payload?.non_retryable),
    });
  });
  worker.task('conformance.retry_after', async (ctx) => {
    record('start', ctx);
    const { delay = 0, succeed_on: succeedOn = 2, type = 'RateLimited' } = ctx.payload ?? {};
    if (ctx.attempt < succeedOn) {
      ctx.retry(delay * 1000, { message: `rate limited on attempt ${ctx.attempt}`, type });
    }
    return { attempt: ctx.attempt };
  });
  worker.task('conformance.wait_cancel', async (ctx) => {
    record('start', ctx);
    try {
      await ctx.sleep(3_600_000);
    } finally {
      record('stopped', ctx);
    }
  });
  return worker;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await serve(registerConformance(new Worker(options())));
}
