// Dead letters: DEAD tasks (the retry policy ran out), by queue; inspect, retry one, or
// retry every dead task of a queue (TaskService.RetryTasks), or of every queue.

import { call } from "../lib/connect.js";
import { count } from "../lib/format.js";
import { html } from "../lib/html.js";
import { useLive } from "../lib/live.js";
import { href } from "../lib/route.js";
import { may } from "../lib/session.js";
import { Action, Empty, ErrorNote } from "../lib/ui.js";
import { countsOf } from "./overview.js";
import { Filters, Pager, TaskTable, listRequest, usePages } from "./tasks.js";

async function deadCounts() {
  const stats = await call("StatsService/GetQueueStats");
  return (stats.queues || [])
    .map((q) => ({ queue: q.queue, dead: countsOf(q).DEAD || 0 }))
    .filter((q) => q.dead > 0);
}

export function DeadLetters({ params }) {
  const queue = params.get("queue") || "";
  const pages = usePages(params);
  const scoped = new URLSearchParams({ ...(queue ? { queue } : {}), state: "DEAD" });
  const list = useLive(
    () => call("TaskService/ListTasks", listRequest(scoped, { pageToken: pages.token })),
    [queue, pages.token],
    { match: (e) => Boolean(e.taskState) && (!queue || e.taskState.queue === queue), every: 1000 },
  );
  const counts = useLive(deadCounts, [], {
    match: (e) => Boolean(e.taskState),
    every: 1000,
  });
  const byQueue = (counts.data || []).filter((q) => !queue || q.queue === queue);
  const total = byQueue.reduce((n, q) => n + q.dead, 0);
  const retryAll = async () => {
    for (const q of byQueue) await call("TaskService/RetryTasks", { queue: q.queue });
    list.reload();
    counts.reload();
  };
  const retryOne = async (id) => {
    await call("TaskService/RetryTask", { id });
    list.reload();
    counts.reload();
  };
  const tasks = list.data?.tasks || [];
  const where = queue ? `in queue ${queue}` : `in ${byQueue.length} queue${byQueue.length === 1 ? "" : "s"}`;
  return html`
    <h1>Dead letters</h1>
    <p class="muted">Tasks whose retry policy ran out. Retrying one gives it a fresh budget of
      attempts; its attempt numbers continue.</p>
    <${Filters} params=${params} path="dead" fields=${["queue"]} />
    <div class="bulk">
      <span data-testid="dead-total">${count(total)} dead ${where}</span>
      ${may("TaskService/RetryTasks") && total > 0 && html`<${Action} label="Retry all"
        testid="retry-all" confirm=${`Retry ${count(total)} dead task${total === 1 ? "" : "s"} ${where}?`}
        run=${retryAll} />`}
    </div>
    <${ErrorNote} error=${list.error || counts.error} />
    <${TaskTable} tasks=${tasks} testid="dead-tasks"
      extraHeader=${html`<th scope="col"><span class="visually-hidden">Actions</span></th>`}
      actions=${(t) => html`<td class="actions">
        <a href=${href(`tasks/${t.id}`)}>Inspect</a>
        ${may("TaskService/RetryTask") && html`<${Action} label="Retry" testid=${`retry-${t.id}`}
          run=${() => retryOne(t.id)} />`}
      </td>`} />
    ${list.loaded && !tasks.length && html`<${Empty}>No dead tasks${queue ? ` in ${queue}` : ""}.<//>`}
    <${Pager} pages=${pages} nextToken=${list.data?.nextPageToken} shown=${tasks.length} />`;
}

