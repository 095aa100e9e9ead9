// Tasks: filters kept in the URL, server-side pages (ListTasks' keyset tokens), live.

import { useEffect, useState } from "preact/hooks";
import { call } from "../lib/connect.js";
import { ago, labels as labelList, STATES, state, time } from "../lib/format.js";
import { html } from "../lib/html.js";
import { useLive } from "../lib/live.js";
import { go, href } from "../lib/route.js";
import { ownTasksOnly } from "../lib/session.js";
import { Empty, ErrorNote, ProgressBar, StateBadge } from "../lib/ui.js";

export const PAGE_SIZE = 50;
const FILTERS = ["queue", "type", "state", "label", "after", "before"];

// "team=a, env=prod" → {team: "a", env: "prod"}
export function parseLabels(text) {
  const out = {};
  for (const part of (text || "").split(",")) {
    const [key, ...rest] = part.split("=");
    if (key.trim()) out[key.trim()] = rest.join("=").trim();
  }
  return out;
}

// The ListTasks request for the URL's filters (datetime-local values are local time).
export function listRequest(params, extra = {}) {
  const request = { pageSize: PAGE_SIZE, ...extra };
  if (params.get("queue")) request.queue = params.get("queue");
  if (params.get("type")) request.type = params.get("type");
  if (params.get("state")) request.state = `TASK_STATE_${params.get("state")}`;
  const wanted = parseLabels(params.get("label"));
  if (Object.keys(wanted).length) request.labels = wanted;
  if (params.get("after")) request.createTimeAfter = new Date(params.get("after")).toISOString();
  if (params.get("before")) request.createTimeBefore = new Date(params.get("before")).toISOString();
  return request;
}

// Does a task event concern a listing with these filters? (Refetch only then.)
export function matches(params) {
  const queue = params.get("queue");
  const type = params.get("type");
  return (e) => {
    const t = e.taskState || e.taskProgress;
    if (!t) return false;
    return (!queue || t.queue === queue) && (!type || t.type === type);
  };
}

function Filters({ params, path, states = STATES, fields = FILTERS }) {
  const [values, setValues] = useState({});
  useEffect(() => {
    setValues(Object.fromEntries(fields.map((f) => [f, params.get(f) || ""])));
  }, [params.toString()]);
  const set = (name) => (e) => setValues({ ...values, [name]: e.target.value });
  const apply = (e) => {
    e.preventDefault();
    go(path, values);
  };
  const field = (name, label, input) =>
    fields.includes(name) && html`<div class="field"><label for=${`f-${name}`}>${label}</label>${input}</div>`;
  return html`
    <form class="filters" onSubmit=${apply} role="search" aria-label="Filter tasks">
      ${field("queue", "Queue", html`<input id="f-queue" value=${values.queue} onInput=${set("queue")} data-testid="filter-queue" />`)}
      ${field("type", "Type", html`<input id="f-type" value=${values.type} onInput=${set("type")} data-testid="filter-type" />`)}
      ${field("state", "State", html`
        <select id="f-state" value=${values.state} onChange=${set("state")} data-testid="filter-state">
          <option value="">any</option>
          ${states.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}
        </select>`)}
      ${field("label", "Labels", html`<input id="f-label" placeholder="key=value, …" value=${values.label}
        onInput=${set("label")} data-testid="filter-label" />`)}
      ${field("after", "Created from", html`<input id="f-after" type="datetime-local" step="1" value=${values.after} onInput=${set("after")} />`)}
      ${field("before", "Created before", html`<input id="f-before" type="datetime-local" step="1" value=${values.before} onInput=${set("before")} />`)}
      <div class="field buttons">
        <button type="submit" data-testid="filter-apply">Apply</button>
        <a href=${href(path)}>Clear all</a>
      </div>
    </form>`;
}

export { Filters };

// Keyset paging: a stack of the tokens that led to the pages before this one.
export function usePages(params) {
  const [tokens, setTokens] = useState([""]);
  useEffect(() => setTokens([""]), [params.toString()]);
  const token = tokens[tokens.length - 1];
  return {
    token,
    number: tokens.length,
    next: (t) => setTokens([...tokens, t]),
    previous: () => setTokens(tokens.slice(0, -1)),
  };
}

export function Pager({ pages, nextToken, shown }) {
  return html`
    <nav class="pager" aria-label="Pages">
      <button type="button" disabled=${pages.number === 1} onClick=${pages.previous}
        data-testid="page-newer">← Newer</button>
      <span data-testid="page-number">Page ${pages.number}${shown != null ? ` · ${shown} shown` : ""}</span>
      <button type="button" disabled=${!nextToken} onClick=${() => pages.next(nextToken)}
        data-testid="page-older">Older →</button>
    </nav>`;
}

export function TaskRow({ task, children }) {
  const s = state(task.state);
  return html`
    <tr data-testid=${`task-${task.id}`} data-state=${s}>
      <td class="mono"><a href=${href(`tasks/${task.id}`)}>${task.id}</a></td>
      <td>${task.type}</td>
      <td>${task.queue || "default"}</td>
      <td><${StateBadge} value=${task.state} /></td>
      <td class="num">${task.attempt || 0}</td>
      <td title=${time(task.createTime)}>${ago(task.createTime)}</td>
      <td class="progress-cell">${s === "RUNNING" && task.progress ? html`<${ProgressBar} compact progress=${task.progress} />` : ""}</td>
      <td class="labels">${labelList(task.labels).map((l) => html`<code>${l}</code> `)}</td>
      ${children}
    </tr>`;
}

export function TaskTable({ tasks, extraHeader = null, actions = null, testid = "tasks" }) {
  return html`
    <div class="table-wrap reserve">
      <table class="tasks" data-testid=${testid}>
        <thead><tr>
          <th scope="col" class="col-id">ID</th>
          <th scope="col">Type</th>
          <th scope="col">Queue</th>
          <th scope="col" class="col-state">State</th>
          <th scope="col" class="num col-attempt">Attempt</th>
          <th scope="col" class="col-when">Created</th>
          <th scope="col" class="col-progress">Progress</th>
          <th scope="col">Labels</th>
          ${extraHeader}
        </tr></thead>
        <tbody>${tasks.map((t) => html`<${TaskRow} key=${t.id} task=${t}>${actions && actions(t)}<//>`)}</tbody>
      </table>
    </div>`;
}

export function Tasks({ params }) {
  const pages = usePages(params);
  const key = `${params.toString()}|${pages.token}`;
  const { data, error, loaded } = useLive(
    () => call("TaskService/ListTasks", listRequest(params, { pageToken: pages.token })),
    [key],
    { match: matches(params), every: 1000 },
  );
  const tasks = data?.tasks || [];
  return html`
    <h1>Tasks</h1>
    ${ownTasksOnly() && html`<p class="muted" data-testid="own-only">Showing the tasks you created.</p>`}
    <${Filters} params=${params} path="tasks" />
    <${ErrorNote} error=${error} />
    <${TaskTable} tasks=${tasks} />
    ${loaded && !tasks.length && html`<${Empty}>${data?.nextPageToken
      ? "No match among the tasks examined so far (labels are not indexed): try older pages."
      : "No tasks match."}<//>`}
    <${Pager} pages=${pages} nextToken=${data?.nextPageToken} shown=${tasks.length} />`;
}
