// Workflows: the list (ListWorkflows' pages, newest first) and one workflow as a graph of
// its nodes, coloured by state, following this tab's event stream; Cancel and Retry.
//
// Events do not name a task's workflow: the page matches state events of the tasks it
// knows to be its nodes, and, while the workflow runs, task creations (a running node may
// spawn children); both refetch at a bounded rate, like every page (lib/live.js).

import { useRef } from "preact/hooks";
import { call } from "../lib/connect.js";
import { ago, count, enumName, int, state, time } from "../lib/format.js";
import { BOX, edgePath, edgesOf, layout, MAX_DRAWN } from "../lib/dag.js";
import { html } from "../lib/html.js";
import { useLive } from "../lib/live.js";
import { go, href } from "../lib/route.js";
import { may } from "../lib/session.js";
import { Action, Empty, ErrorNote, StateBadge } from "../lib/ui.js";
import { Pager, usePages } from "./tasks.js";

const PAGE_SIZE = 50;
const WORKFLOW_STATES = ["RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];

export const flowState = (value) => (value || "").replace(/^WORKFLOW_STATE_/, "") || "UNSPECIFIED";

function FlowBadge({ value, testid = "workflow-state" }) {
  const name = flowState(value);
  return html`<span class=${`badge state-${name.toLowerCase()}`} data-testid=${testid}
    data-state=${name}>${name}</span>`;
}

function NodeCounts({ counts }) {
  const total = int(counts?.total);
  const done = total - int(counts?.unfinished);
  const failed = int(counts?.failed);
  const cancelled = int(counts?.cancelled);
  return html`<span class="num">${count(done)} / ${count(total)}</span>
    ${failed ? html` <span class="bad">${count(failed)} failed</span>` : ""}
    ${cancelled ? html` <span class="muted">${count(cancelled)} cancelled</span>` : ""}`;
}

export function Workflows({ params }) {
  const wanted = params.get("state") || "";
  const pages = usePages(params);
  const { data, error, loaded } = useLive(
    () => call("WorkflowService/ListWorkflows", {
      pageSize: PAGE_SIZE,
      pageToken: pages.token,
      ...(wanted ? { state: `WORKFLOW_STATE_${wanted}` } : {}),
    }),
    [wanted, pages.token],
    // A node's move changes its workflow's counts; events do not say which workflow.
    { match: (e) => Boolean(e.taskState), every: 1000 },
  );
  const flows = data?.workflows || [];
  return html`
    <h1>Workflows</h1>
    <form class="filters" role="search" aria-label="Filter workflows"
      onSubmit=${(e) => e.preventDefault()}>
      <div class="field"><label for="f-wstate">State</label>
        <select id="f-wstate" value=${wanted} data-testid="filter-workflow-state"
          onChange=${(e) => go("workflows", { state: e.target.value })}>
          <option value="">any</option>
          ${WORKFLOW_STATES.map((s) => html`<option value=${s}>${s.toLowerCase()}</option>`)}
        </select></div>
    </form>
    <${ErrorNote} error=${error} />
    <div class="table-wrap reserve">
      <table class="workflows" data-testid="workflows">
        <thead><tr>
          <th scope="col" class="col-id">ID</th><th scope="col">Name</th>
          <th scope="col" class="col-state">State</th>
          <th scope="col">Nodes done / total</th><th scope="col" class="col-when">Created</th>
          <th scope="col" class="col-when">Finished</th>
        </tr></thead>
        <tbody>${flows.map((w) => html`
          <tr key=${w.id} data-testid=${`workflow-${w.id}`} data-state=${flowState(w.state)}>
            <td class="mono"><a href=${href(`workflows/${w.id}`)}>${w.id}</a></td>
            <td>${w.name || html`<span class="muted">unnamed</span>`}
              ${w.templateName && html` <span class="muted">(${w.templateName} v${w.templateVersion})</span>`}</td>
            <td><${FlowBadge} value=${w.state} testid=${`workflow-${w.id}-state`} /></td>
            <td data-testid=${`workflow-${w.id}-nodes`}><${NodeCounts} counts=${w.counts} /></td>
            <td title=${time(w.createTime)}>${ago(w.createTime)}</td>
            <td>${time(w.finishTime)}</td>
          </tr>`)}</tbody>
      </table>
    </div>
    ${loaded && !flows.length && html`<${Empty}>No workflows${wanted ? ` ${wanted.toLowerCase()}` : ""}.<//>`}
    <${Pager} pages=${pages} nextToken=${data?.nextPageToken} shown=${flows.length} />`;
}

// A name too long for its box is cut; the full name is the box's tooltip.
const label = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

function Graph({ nodes }) {
  const edges = edgesOf(nodes);
  const { positions, layers, width, height } = layout(nodes.map((n) => n.name), edges);
  return html`
    <div class="dag-wrap" tabindex="0">
      <svg class="dag" data-testid="graph" data-layers=${layers.length} width=${width}
        height=${height} viewBox=${`0 0 ${width} ${height}`} role="img"
        aria-label=${`${nodes.length} nodes in ${layers.length} layers`}>
        <defs>
          <marker id="dag-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7"
            markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" /></marker>
        </defs>
        <g class="edges">
          ${edges.map((e) => html`
            <path key=${`${e.from}>${e.to}`} class=${`edge ${e.kind}`} marker-end="url(#dag-arrow)"
              data-testid=${`edge-${e.from}-${e.to}`} data-from=${e.from} data-to=${e.to}
              d=${edgePath(positions.get(e.from), positions.get(e.to))} />`)}
        </g>
        ${nodes.map((n) => {
          const p = positions.get(n.name);
          const s = state(n.state);
          return html`
            <a key=${n.name} href=${href(`tasks/${n.taskId}`)} class=${`node state-${s.toLowerCase()}`}
              data-testid=${`node-${n.name}`} data-state=${s} data-layer=${p.layer}
              aria-label=${`${n.name}: ${s}`}>
              <title>${n.name} (${n.type}) · ${s}${n.error?.message ? ` · ${n.error.message}` : ""}</title>
              <rect x=${p.x} y=${p.y} width=${BOX.width} height=${BOX.height} rx="6" />
              <text x=${p.x + 8} y=${p.y + 17} class="name">${label(n.name, 22)}</text>
              <text x=${p.x + 8} y=${p.y + 35} class="node-state">${s}${int(n.attempt) > 1 ? ` · #${n.attempt}` : ""}</text>
            </a>`;
        })}
      </svg>
    </div>`;
}

// Too many nodes to draw legibly: the same facts as rows.
function NodeTable({ nodes }) {
  return html`
    <div class="table-wrap">
      <table class="nodes" data-testid="node-table">
        <thead><tr><th scope="col">Node</th><th scope="col">State</th><th scope="col">Type</th>
          <th scope="col">Waits for</th><th scope="col" class="num">Attempt</th></tr></thead>
        <tbody>${nodes.map((n) => html`
          <tr key=${n.name} data-testid=${`node-${n.name}`} data-state=${state(n.state)}>
            <td><a href=${href(`tasks/${n.taskId}`)}>${n.name}</a></td>
            <td><${StateBadge} value=${n.state} /></td>
            <td>${n.type}</td>
            <td>${[...(n.dependsOn || []), ...(n.spawnedBy ? [`${n.spawnedBy} (spawned)`] : [])].join(", ") || "–"}</td>
            <td class="num">${n.attempt || 0}</td>
          </tr>`)}</tbody>
      </table>
    </div>`;
}

export function WorkflowPage({ id }) {
  const known = useRef({ tasks: new Set(), running: false });
  const { data, error, reload } = useLive(async () => {
    const { workflow } = await call("WorkflowService/GetWorkflow", { id });
    known.current = {
      tasks: new Set((workflow.nodes || []).map((n) => n.taskId)),
      running: workflow.state === "WORKFLOW_STATE_RUNNING",
    };
    return workflow;
  }, [id], {
    match: (e) => Boolean(e.taskState) && (known.current.tasks.has(e.taskState.taskId)
      || (known.current.running && !e.taskState.previousState)),
    every: 500,
  });

  if (!data) {
    return html`<h1>Workflow <span class="mono">${id}</span></h1>
      ${error ? html`<${ErrorNote} error=${error} />` : html`<p>Loading…</p>`}`;
  }
  const flow = data;
  const nodes = flow.nodes || [];
  const s = flowState(flow.state);
  const unfinished = int(flow.counts?.unfinished);
  const act = (method) => async () => {
    await call(`WorkflowService/${method}`, method === "CancelWorkflow"
      ? { id, reason: "cancelled from the dashboard" } : { id });
    reload();
  };
  return html`
    <h1>Workflow <span class="mono" data-testid="workflow-id">${flow.id}</span></h1>
    <div class="task-head">
      <${FlowBadge} value=${flow.state} />
      <strong data-testid="workflow-name">${flow.name}</strong>
      <span class="actions">
        ${s === "RUNNING" && may("WorkflowService/CancelWorkflow") && html`<${Action} label="Cancel"
          kind="danger" testid="cancel-workflow" run=${act("CancelWorkflow")}
          confirm=${`Cancel its ${count(unfinished)} unfinished nodes?`} />`}
        ${["FAILED", "CANCELLED"].includes(s) && !unfinished && may("WorkflowService/RetryWorkflow")
          && html`<${Action} label="Retry" testid="retry-workflow" run=${act("RetryWorkflow")} />`}
      </span>
    </div>
    <${ErrorNote} error=${error} />
    <dl class="facts">
      <div><dt>Nodes done / total</dt><dd data-testid="workflow-nodes"><${NodeCounts} counts=${flow.counts} /></dd></div>
      <div><dt>Failure policy</dt><dd>${enumName(flow.failurePolicy, "FAILURE_POLICY_") || "continue"}</dd></div>
      <div><dt>Created</dt><dd>${time(flow.createTime)}</dd></div>
      <div><dt>Finished</dt><dd>${time(flow.finishTime)}</dd></div>
      <div><dt>Template</dt><dd>${flow.templateName ? `${flow.templateName} v${flow.templateVersion}` : "–"}</dd></div>
      <div><dt>Retried</dt><dd>${int(flow.generation)} times</dd></div>
    </dl>
    <section aria-labelledby="graph-title">
      <h2 id="graph-title">Graph <span class="count">${count(nodes.length)} nodes</span></h2>
      ${nodes.length > MAX_DRAWN
        ? html`<p class="muted" data-testid="graph-too-large">${count(nodes.length)} nodes are
            too many to draw legibly (the limit is ${MAX_DRAWN}): they are listed instead.</p>
            <${NodeTable} nodes=${nodes} />`
        : html`<${Graph} nodes=${nodes} />`}
    </section>`;
}
