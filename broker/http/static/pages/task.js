// One task: payload and result, error, attempts on a timeline, live progress, logs,
// cancel and retry. Live updates come from this tab's event stream (no WatchTask):
// progress events move the bar directly; state events refetch the task.

import { useEffect, useRef, useState } from "preact/hooks";
import { call, stream } from "../lib/connect.js";
import {
  duration, enumName, labels as labelList, payload, RETRYABLE, state, TERMINAL, time, traceId,
} from "../lib/format.js";
import { hub, taskIdOf } from "../lib/events.js";
import { html } from "../lib/html.js";
import { useLive, useThrottled } from "../lib/live.js";
import { href } from "../lib/route.js";
import { may } from "../lib/session.js";
import { Action, ErrorNote, ProgressBar, StateBadge } from "../lib/ui.js";

const MAX_LOG_LINES = 2000;

function Payload({ title, value, testid }) {
  const p = payload(value);
  return html`
    <section class="payload" aria-label=${title}>
      <h2>${title}</h2>
      ${p.kind === "json"
        ? html`<pre class="json" data-testid=${testid} tabindex="0">${p.text}</pre>`
        : html`<p class="muted" data-testid=${testid}>${p.text}</p>`}
    </section>`;
}

function Timeline({ task, attempts }) {
  if (!attempts.length) return html`<p class="muted">Not started yet.</p>`;
  const now = Date.now();
  const t = (v) => (v ? new Date(v).getTime() : now);
  const start = Math.min(t(task.createTime), ...attempts.map((a) => t(a.startTime)));
  const end = Math.max(start + 1, ...attempts.map((a) => t(a.endTime)));
  const span = end - start;
  return html`
    <ol class="timeline" data-testid="attempts">
      ${attempts.map((a) => {
        const outcome = a.outcome ? enumName(a.outcome, "ATTEMPT_OUTCOME_") : "running";
        const left = ((t(a.startTime) - start) / span) * 100;
        const width = Math.max(((t(a.endTime) - t(a.startTime)) / span) * 100, 0.5);
        const took = a.startTime ? duration((t(a.endTime) - t(a.startTime)) / 1000) : "–";
        return html`
          <li data-testid=${`attempt-${a.attempt}`} data-outcome=${outcome}>
            <div class="attempt-text">
              <strong>#${a.attempt}</strong> <span class=${`outcome ${outcome.replace(/ /g, "-")}`}>${outcome}</span>
              · ${a.workerId || "no worker"} · ${time(a.startTime)} · ${took}
              ${a.error && html`<div class="attempt-error">${a.error.type}: ${a.error.message}</div>`}
            </div>
            <div class="track" aria-hidden="true">
              <div class=${`span ${outcome.replace(/ /g, "-")}`} style=${{ left: `${left}%`, width: `${width}%` }}></div>
            </div>
          </li>`;
      })}
    </ol>`;
}

const LEVELS = { TASK_LOG_LEVEL_DEBUG: "debug", TASK_LOG_LEVEL_WARNING: "warning",
  TASK_LOG_LEVEL_ERROR: "error", TASK_LOG_LEVEL_CRITICAL: "critical" };

// Records stored so far, then new ones while the task runs (FollowTaskLogs ends by itself
// once the task finished and every record was sent). A finished task's are read once.
function Logs({ id, finished }) {
  const [records, setRecords] = useState([]);
  const [error, setError] = useState(null);
  const [more, setMore] = useState(false);
  const buffer = useRef([]);
  useEffect(() => {
    const controller = new AbortController();
    let flushed = [];
    const flush = () => {
      if (!buffer.current.length) return;
      flushed = flushed.concat(buffer.current).slice(-MAX_LOG_LINES);
      buffer.current = [];
      setRecords(flushed);
    };
    const timer = setInterval(flush, 250);
    (async () => {
      try {
        if (finished) {
          const page = await call("TaskService/ListTaskLogs", { id, pageSize: MAX_LOG_LINES },
            { signal: controller.signal });
          buffer.current = page.records || [];
          setMore(Boolean(page.nextPageToken));
        } else {
          for await (const m of stream("TaskService/FollowTaskLogs", { id }, { signal: controller.signal })) {
            buffer.current.push(...(m.records || []));
          }
        }
        flush();
      } catch (e) {
        if (!controller.signal.aborted) setError(e);
      }
    })();
    return () => {
      controller.abort();
      clearInterval(timer);
    };
  }, [id, finished]);
  return html`
    <section aria-labelledby="logs-title">
      <h2 id="logs-title">Logs</h2>
      <${ErrorNote} error=${error} />
      ${records.length
        ? html`<ol class="logs" data-testid="logs" tabindex="0">${records.map((r) => html`
            <li class=${LEVELS[r.level] || "info"}><time>${time(r.time)}</time>
              <span class="level">${LEVELS[r.level] || "info"}</span>
              <span class="attempt">#${r.attempt || 1}</span> ${r.message}</li>`)}</ol>`
        : html`<p class="muted">No log records${finished ? "" : " yet"}.</p>`}
      ${more && html`<p class="muted">Only the first ${MAX_LOG_LINES} records are shown:
        <code>taskyard logs ${id}</code> prints them all.</p>`}
    </section>`;
}

export function TaskPage({ id }) {
  const { data, error, reload } = useLive(async () => {
    const [got, attempts] = await Promise.all([
      call("TaskService/GetTask", { id, view: "TASK_VIEW_FULL" }),
      call("TaskService/ListTaskAttempts", { id }),
    ]);
    return { task: got.task, attempts: attempts.attempts || [] };
  }, [id], { match: (e) => e.taskState?.taskId === id, every: 500 });
  const [liveProgress, pushProgress, setProgress] = useThrottled(null, 200);

  useEffect(() => {
    setProgress(null);
    return hub.subscribe((batch) => {
      if (!Array.isArray(batch)) return;
      for (const e of batch) {
        if (e.taskProgress && taskIdOf(e) === id) pushProgress(e.taskProgress.progress || {});
      }
    });
  }, [id]);

  if (!data) {
    return html`<h1>Task <span class="mono">${id}</span></h1>
      ${error ? html`<${ErrorNote} error=${error} />` : html`<p>Loading…</p>`}`;
  }
  const { task, attempts } = data;
  const s = state(task.state);
  const progress = s === "RUNNING" ? liveProgress || task.progress : task.progress;
  const trace = traceId(task);
  const finished = TERMINAL.has(s);
  return html`
    <h1>Task <span class="mono" data-testid="task-id">${task.id}</span></h1>
    <div class="task-head">
      <${StateBadge} value=${task.state} />
      ${task.cancelRequested && !finished && html`<span class="badge paused" data-testid="cancel-requested">cancel requested</span>`}
      <span class="actions">
        ${!finished && may("TaskService/CancelTask") && html`<${Action} label="Cancel" kind="danger"
          testid="cancel" run=${async () => { await call("TaskService/CancelTask", { id, reason: "cancelled from the dashboard" }); reload(); }} />`}
        ${RETRYABLE.has(s) && may("TaskService/RetryTask") && html`<${Action} label="Retry"
          testid="retry" run=${async () => { await call("TaskService/RetryTask", { id }); reload(); }} />`}
      </span>
    </div>
    <${ErrorNote} error=${error} />
    <section aria-labelledby="progress-title" class="progress-section">
      <h2 id="progress-title">Progress</h2>
      ${s === "RUNNING" || progress
        ? html`<${ProgressBar} progress=${progress} />`
        : html`<p class="muted">${finished ? "No progress was reported." : "Not running yet."}</p>`}
    </section>
    <dl class="facts">
      <div><dt>Type</dt><dd data-testid="task-type">${task.type}</dd></div>
      <div><dt>Queue</dt><dd><a href=${href("tasks", { queue: task.queue || "default" })}>${task.queue || "default"}</a></dd></div>
      <div><dt>Priority</dt><dd>${task.priority || 0}</dd></div>
      <div><dt>Attempt</dt><dd>${task.attempt || 0} of ${task.retryPolicy?.maxAttempts || task.maxAttempts || "–"}</dd></div>
      <div><dt>Created</dt><dd>${time(task.createTime)}</dd></div>
      <div><dt>Runs at</dt><dd>${time(task.runTime)}</dd></div>
      <div><dt>Started</dt><dd>${time(task.startTime)}</dd></div>
      <div><dt>Finished</dt><dd>${time(task.finishTime)}</dd></div>
      <div><dt>Worker</dt><dd>${task.workerId || "–"}</dd></div>
      <div><dt>Trace id</dt><dd class="mono" data-testid="trace-id">${trace || "–"}</dd></div>
      <div><dt>Request id</dt><dd class="mono">${task.requestId || "–"}</dd></div>
      <div><dt>Labels</dt><dd data-testid="task-labels">${labelList(task.labels).map((l) => html`<code>${l}</code> `)}</dd></div>
    </dl>
    ${task.error && html`
      <section class="task-error" aria-labelledby="error-title">
        <h2 id="error-title">Error</h2>
        <p data-testid="task-error"><strong>${task.error.type}</strong>: ${task.error.message}</p>
        ${task.error.details && html`<pre tabindex="0">${task.error.details}</pre>`}
      </section>`}
    <div class="payloads">
      <${Payload} title="Payload" value=${task.payload} testid="payload" />
      <${Payload} title="Result" value=${task.result} testid="result" />
    </div>
    <section aria-labelledby="attempts-title">
      <h2 id="attempts-title">Attempts</h2>
      <${Timeline} task=${task} attempts=${attempts} />
    </section>
    <${Logs} id=${id} finished=${finished} />`;
}
