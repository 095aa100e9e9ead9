// Workers: connected sessions with their queues, types, load and last heartbeat; drain.

import { useEffect, useState } from "preact/hooks";
import { call } from "../lib/connect.js";
import { ago, int, time } from "../lib/format.js";
import { html } from "../lib/html.js";
import { useLive } from "../lib/live.js";
import { may } from "../lib/session.js";
import { Action, Empty, ErrorNote } from "../lib/ui.js";

// Re-render every second so "3 s ago" stays true without refetching.
function useNow(every = 1000) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), every);
    return () => clearInterval(timer);
  }, [every]);
  return now;
}

function Load({ worker }) {
  const busy = int(worker.leasesInFlight);
  const capacity = busy + int(worker.credits);
  const percent = capacity ? Math.round((busy / capacity) * 100) : 0;
  return html`
    <span class="load">
      <meter min="0" max=${capacity || 1} value=${busy} aria-label="load"></meter>
      <span data-testid=${`load-${worker.sessionId}`}>${busy} / ${capacity} (${percent}%)</span>
    </span>`;
}

export function Workers() {
  const now = useNow();
  const { data, error, reload, loaded } = useLive(() => call("WorkerService/ListWorkers"), [], {
    match: (e) => Boolean(e.worker || e.taskState),
    every: 1000,
    poll: 5000,
  });
  const workers = data?.workers || [];
  return html`
    <h1>Workers</h1>
    <${ErrorNote} error=${error} />
    <div class="table-wrap">
      <table class="workers" data-testid="workers">
        <thead><tr>
          <th scope="col">Worker</th><th scope="col">Queues</th><th scope="col">Task types</th>
          <th scope="col">Load (leases / capacity)</th><th scope="col">Last heartbeat</th>
          <th scope="col">Connected</th><th scope="col">SDK · address</th><th scope="col">State</th>
          <th scope="col"><span class="visually-hidden">Actions</span></th>
        </tr></thead>
        <tbody>${workers.map((w) => html`
          <tr key=${w.sessionId} data-testid=${`worker-${w.workerId}`}>
            <th scope="row">${w.workerId}<div class="muted mono">${w.sessionId}</div></th>
            <td>${(w.queues || []).join(", ") || "default"}</td>
            <td>${(w.taskTypes || []).join(", ")}</td>
            <td><${Load} worker=${w} /></td>
            <td title=${time(w.lastSeenTime)}>${ago(w.lastSeenTime, now)}</td>
            <td title=${time(w.connectTime)}>${ago(w.connectTime, now)}</td>
            <td>${w.sdk} · ${w.address}</td>
            <td data-testid=${`worker-${w.workerId}-state`}>${w.draining ? html`<span class="badge paused">draining</span>` : "active"}</td>
            <td class="actions">${!w.draining && may("WorkerService/DrainWorker") && html`<${Action}
              label="Drain" testid=${`drain-${w.workerId}`}
              confirm=${`Stop giving ${w.workerId} new tasks? It finishes what it holds.`}
              run=${async () => { await call("WorkerService/DrainWorker", { workerId: w.workerId }); reload(); }} />`}</td>
          </tr>`)}</tbody>
      </table>
    </div>
    ${loaded && !workers.length && html`<${Empty}>No worker is connected.<//>`}`;
}
