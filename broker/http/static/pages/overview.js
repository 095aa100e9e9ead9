// Overview: every queue's live figures (StatsService.GetQueueStats, QueueService.ListQueues),
// the last hour per minute as charts (GetTaskStats with by_minute), connected workers.

import { useMemo } from "preact/hooks";
import { call } from "../lib/connect.js";
import { count, duration, int, seconds, state } from "../lib/format.js";
import { html } from "../lib/html.js";
import { useLive } from "../lib/live.js";
import { href } from "../lib/route.js";
import { may } from "../lib/session.js";
import { Chart } from "../lib/chart.js";
import { Action, Empty, ErrorNote } from "../lib/ui.js";

const HOUR_MS = 3600_000;

// Counts by state name from QueueStats.counts ([{state, count}], absent states are 0).
export function countsOf(queueStats) {
  const out = {};
  for (const c of queueStats.counts || []) out[state(c.state)] = int(c.count);
  return out;
}

export const depthOf = (counts) =>
  (counts.SCHEDULED || 0) + (counts.PENDING || 0) + (counts.RETRYING || 0);

function rateLimit(queue) {
  const limit = queue?.rateLimit;
  if (!limit?.limit) return "–";
  return `${limit.limit} / ${duration(seconds(limit.interval))}`;
}

function QueueRow({ stats, queue, onChange }) {
  const counts = countsOf(stats);
  const name = stats.queue;
  const id = (field) => `queue-${name}-${field}`;
  const paused = Boolean(stats.paused);
  const pending = stats.oldestPendingAge ? duration(seconds(stats.oldestPendingAge)) : "–";
  return html`
    <tr data-testid=${`queue-${name}`}>
      <th scope="row"><a href=${href("tasks", { queue: name })}>${name}</a></th>
      <td class="num" data-testid=${id("depth")}>${count(depthOf(counts))}</td>
      <td class="num" data-testid=${id("running")}>${count(stats.running)}</td>
      <td class="num" data-testid=${id("succeeded")}>${count(counts.SUCCEEDED)}</td>
      <td class="num" data-testid=${id("failed")}>${count(counts.FAILED)}</td>
      <td class="num" data-testid=${id("dead")}>
        ${counts.DEAD ? html`<a href=${href("dead", { queue: name })}>${count(counts.DEAD)}</a>` : "0"}
      </td>
      <td class="num" data-testid=${id("minute")}>${count(stats.finishedLastMinute)}</td>
      <td class="num" data-testid=${id("hour")}>${count(stats.finishedLastHour)}</td>
      <td class="num">${pending}</td>
      <td class="num" data-testid=${id("concurrency")}>${int(queue?.maxConcurrency) || "–"}</td>
      <td class="num" data-testid=${id("rate")}>${rateLimit(queue)}</td>
      <td data-testid=${id("paused")}>${paused ? html`<span class="badge paused">paused</span>` : "active"}</td>
      <td class="actions">
        ${paused && may("QueueService/ResumeQueue") && html`<${Action} label="Resume"
          testid=${id("resume")} run=${async () => { await call("QueueService/ResumeQueue", { name }); onChange(); }} />`}
        ${!paused && may("QueueService/PauseQueue") && html`<${Action} label="Pause"
          testid=${id("pause")} run=${async () => { await call("QueueService/PauseQueue", { name, note: "paused from the dashboard" }); onChange(); }} />`}
      </td>
    </tr>`;
}

function Queues() {
  const live = useLive(async () => {
    const [stats, queues] = await Promise.all([
      call("StatsService/GetQueueStats"),
      may("QueueService/ListQueues") ? call("QueueService/ListQueues", { pageSize: 1000 }) : {},
    ]);
    const byName = Object.fromEntries((queues.queues || []).map((q) => [q.name, q]));
    return { stats: stats.queues || [], byName };
  }, [], { every: 1000, poll: 5000 });
  const { data, error, reload } = live;
  const totals = useMemo(() => {
    const t = { depth: 0, running: 0, hour: 0 };
    for (const s of data?.stats || []) {
      t.depth += depthOf(countsOf(s));
      t.running += int(s.running);
      t.hour += int(s.finishedLastHour);
    }
    return t;
  }, [data]);
  return html`
    <section aria-labelledby="queues-title">
      <h2 id="queues-title">Queues</h2>
      <dl class="cards">
        <div><dt>Queues</dt><dd data-testid="total-queues">${count(data?.stats.length)}</dd></div>
        <div><dt>Waiting</dt><dd data-testid="total-depth">${count(totals.depth)}</dd></div>
        <div><dt>Running</dt><dd data-testid="total-running">${count(totals.running)}</dd></div>
        <div><dt>Finished, last hour</dt><dd data-testid="total-hour">${count(totals.hour)}</dd></div>
      </dl>
      <${ErrorNote} error=${error} />
      <div class="table-wrap">
        <table class="queues" data-testid="queues" data-loaded=${data ? "yes" : "no"}>
          <thead><tr>
            <th scope="col">Queue</th>
            <th scope="col" class="num" title="scheduled, pending and retrying">Waiting</th>
            <th scope="col" class="num">Running</th>
            <th scope="col" class="num">Succeeded</th>
            <th scope="col" class="num">Failed</th>
            <th scope="col" class="num">Dead</th>
            <th scope="col" class="num">Last min</th>
            <th scope="col" class="num">Last hour</th>
            <th scope="col" class="num">Oldest waiting</th>
            <th scope="col" class="num">Concurrency</th>
            <th scope="col" class="num">Rate limit</th>
            <th scope="col">State</th>
            <th scope="col"><span class="visually-hidden">Actions</span></th>
          </tr></thead>
          <tbody>
            ${(data?.stats || []).map((s) => html`<${QueueRow} key=${s.queue} stats=${s}
              queue=${data.byName[s.queue]} onChange=${reload} />`)}
          </tbody>
        </table>
      </div>
      ${data && !data.stats.length && html`<${Empty}>No queues yet: submit a task.<//>`}
    </section>`;
}

function History() {
  const { data, error } = useLive(async () => {
    const end = new Date();
    const start = new Date(end.getTime() - HOUR_MS);
    const reply = await call("StatsService/GetTaskStats", {
      startTime: start.toISOString(),
      endTime: end.toISOString(),
      byMinute: true,
    });
    const minutes = reply.total?.minutes || [];
    const xs = minutes.map((m) => new Date(m.startTime).getTime() / 1000);
    const ms = (d) => (d && int(d.count) ? seconds(d.p50) * 1000 : null);
    const p99 = (d) => (d && int(d.count) ? seconds(d.p99) * 1000 : null);
    return {
      xs,
      finished: minutes.map((m) => int(m.finished)),
      failed: minutes.map((m) => int(m.failed)),
      p50: minutes.map((m) => ms(m.waitTime)),
      p99: minutes.map((m) => p99(m.waitTime)),
      total: reply.total || {},
    };
  }, [], { every: 10000, poll: 30000 });
  if (error) return html`<${ErrorNote} error=${error} />`;
  if (!data) return html`<div class="charts placeholder" aria-busy="true"></div>`;
  const wait = data.total.waitTime || {};
  const peak = Math.max(0, ...data.finished);
  return html`
    <section aria-labelledby="history-title">
      <h2 id="history-title">Last hour</h2>
      <div class="charts">
        <${Chart} testid="chart-throughput" title="Throughput" unit="/min" xs=${data.xs}
          summary=${`${count(data.finished.reduce((a, b) => a + b, 0))} finished, peak ${count(peak)}/min`}
          series=${[{ label: "finished", values: data.finished }, { label: "failed", values: data.failed }]} />
        <${Chart} testid="chart-latency" title="Submit → start latency" unit=" ms" xs=${data.xs}
          summary=${`p50 ${duration(seconds(wait.p50))}, p99 ${duration(seconds(wait.p99))} over the hour`}
          series=${[{ label: "p50", values: data.p50 }, { label: "p99", values: data.p99 }]} />
      </div>
    </section>`;
}

function Workers() {
  const { data, error } = useLive(() => call("WorkerService/ListWorkers"), [], {
    match: (e) => Boolean(e.worker),
    every: 1000,
    poll: 10000,
  });
  const workers = data?.workers || [];
  return html`
    <section aria-labelledby="workers-title">
      <h2 id="workers-title">Connected workers
        <span class="count" data-testid="workers-count">${count(workers.length)}</span></h2>
      <${ErrorNote} error=${error} />
      <ul class="worker-chips">
        ${workers.map((w) => html`<li key=${w.sessionId}>
          <a href=${href("workers")}>${w.workerId}</a>
          <span class="muted">${(w.queues || ["default"]).join(", ")}</span>
          ${w.draining && html`<span class="badge paused">draining</span>`}
        </li>`)}
      </ul>
      ${data && !workers.length && html`<${Empty}>No worker is connected.<//>`}
    </section>`;
}

export function Overview() {
  return html`
    <h1>Overview</h1>
    <${Queues} />
    ${may("StatsService/GetTaskStats") && html`<${History} />`}
    ${may("WorkerService/ListWorkers") && html`<${Workers} />`}`;
}
