// Smoke test: the submit example against a real broker and the repository's Python
// demo worker (examples/demo_worker.py). Python comes from ../../.venv or TASKYARD_PYTHON.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '..', '..', '..');
const PYTHON = process.env.TASKYARD_PYTHON ?? path.join(ROOT, '.venv', 'bin', 'python');
const SUBMIT = path.join(here, '..', 'src', 'submit.js');
const dir = mkdtempSync(path.join(os.tmpdir(), 'taskyard-client-'));
let broker;
let worker;
let target;

/** Start a Python process from the repository and resolve with its first line matching `pattern`. */
function startPython(args, pattern) {
  const child = spawn(PYTHON, args, {
    cwd: ROOT,
    env: { ...process.env, PYTHONPATH: ROOT, PYTHONUNBUFFERED: '1' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const found = new Promise((resolve, reject) => {
    const lines = [];
    readline.createInterface({ input: child.stderr }).on('line', (line) => {
      lines.push(line);
      const match = pattern.exec(line);
      if (match) resolve(match);
    });
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited (${code}):\n${lines.join('\n')}`)));
  });
  return { child, found };
}

function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', resolve);
    child.kill('SIGTERM');
  });
}

before(async () => {
  const db = `sqlite+aiosqlite:///${path.join(dir, 'x.db')}`;
  broker = startPython(['-m', 'broker', 'broker', '--listen', '127.0.0.1:0', '--db', db], /listening on [^:\s]+:(\d+)/);
  target = `127.0.0.1:${(await broker.found)[1]}`;
  worker = startPython(['-m', 'broker', 'worker', 'examples.demo_worker:worker', '--target', target], /connected to/);
  await worker.found;
});

after(async () => {
  await stop(worker?.child);
  await stop(broker?.child);
  rmSync(dir, { recursive: true, force: true });
});

async function submit(...args) {
  try {
    const { stdout } = await promisify(execFile)(process.execPath, [SUBMIT, '--target', target, ...args]);
    return { code: 0, lines: stdout.trim().split('\n') };
  } catch (error) {
    return { code: error.code, lines: error.stdout.trim().split('\n') };
  }
}

test('submit prints the progress it watched and the result', async () => {
  const { code, lines } = await submit('sleep', '--payload', '{"seconds": 0.6}');
  assert.equal(code, 0, lines.join('\n'));
  assert.match(lines[0], /^submitted [0-9A-Z]{26} \(sleep\) (PENDING|RUNNING)$/);
  assert.ok(lines.some((l) => /^RUNNING attempt 1 progress \d+% slept/.test(l)), lines.join('\n'));
  assert.equal(lines.at(-2), 'SUCCEEDED attempt 1 progress 100% slept 0.6s');
  assert.equal(lines.at(-1), 'result: {"slept":0.6}');
});

test('submit round-trips a JSON payload through the worker', async () => {
  const payload = { to: 'a@example.com', n: 2, tags: ['x', null, true] };
  const { code, lines } = await submit('echo', '--payload', JSON.stringify(payload));
  assert.equal(code, 0, lines.join('\n'));
  assert.deepEqual(JSON.parse(lines.at(-1).replace(/^result: /, '')), payload);
});

test('a task that fails for good exits 1 with its error', async () => {
  const { code, lines } = await submit('fail', '--payload', '{"permanent": true}');
  assert.equal(code, 1);
  assert.equal(lines.at(-1), 'FAILED: NonRetryableError: this task is designed to fail for good');
});
