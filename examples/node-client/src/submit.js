#!/usr/bin/env node
// Submit a task, watch its progress and print its result:
//
//   node src/submit.js sleep --payload '{"seconds": 2}' [--target 127.0.0.1:50051]
//
// Exits 0 when the task succeeded, 1 when it ended otherwise, 2 on a broker error.

import { parseArgs } from 'node:util';

import { TERMINAL, TaskClient, payloadValue } from './client.js';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    target: { type: 'string', default: process.env.TASKYARD_TARGET ?? '127.0.0.1:50051' },
    payload: { type: 'string', default: 'null' },
    priority: { type: 'string', default: '0' },
    queue: { type: 'string', default: '' },
  },
});
if (positionals.length !== 1) {
  console.error('usage: submit.js TYPE [--payload JSON] [--priority N] [--queue Q] [--target HOST:PORT]');
  process.exit(2);
}

const client = new TaskClient(values.target);
const short = (state) => state.replace('TASK_STATE_', '');
try {
  const task = await client.submit(positionals[0], JSON.parse(values.payload), {
    priority: Number(values.priority),
    queue: values.queue,
  });
  console.log(`submitted ${task.id} (${task.type}) ${short(task.state)}`);
  let last = null;
  for await (const update of client.watch(task.id)) {
    const p = update.progress;
    const line = p
      ? `${short(update.state)} attempt ${update.attempt} progress ${p.percent.toFixed(0)}% ${p.message}`
      : `${short(update.state)} attempt ${update.attempt}`;
    if (line !== last) console.log(line);
    last = line;
    if (TERMINAL.has(update.state)) break;
  }
  const done = await client.get(task.id);
  if (done.state === 'TASK_STATE_SUCCEEDED') {
    console.log(`result: ${JSON.stringify(payloadValue(done.result))}`);
  } else {
    console.log(`${short(done.state)}: ${done.error?.type}: ${done.error?.message}`);
    process.exitCode = 1;
  }
} catch (error) {
  console.error(`broker error: ${error.details ?? error.message}`);
  process.exitCode = 2;
} finally {
  client.close();
}
