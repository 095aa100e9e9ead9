// Schedules: triggers, next fire times in each schedule's own time zone, pause, resume,
// run now, and the fire history (ScheduleService.ListScheduleFires).

import { useState } from "preact/hooks";
import { call } from "../lib/connect.js";
import { count, duration, enumName, int, seconds, time } from "../lib/format.js";
import { html } from "../lib/html.js";
import { useLive } from "../lib/live.js";
import { href } from "../lib/route.js";
import { may } from "../lib/session.js";
import { Action, Empty, ErrorNote, StateBadge } from "../lib/ui.js";

function trigger(spec) {
  if (spec?.cron) return `cron ${spec.cron.expression}`;
  if (spec?.interval) return `every ${duration(seconds(spec.interval.every))}`;
  if (spec?.recurrence) return spec.recurrence.rule;
  if (spec?.once) return `once at ${time(spec.once.fireTime)}`;
  return "–";
}

function Fires({ name }) {
  const { data, error } = useLive(
    () => call("ScheduleService/ListScheduleFires", { name, pageSize: 20 }),
    [name],
    { match: (e) => e.scheduleFire?.schedule === name, every: 1000 },
  );
  const fires = data?.fires || [];
  return html`
    <div class="fires">
      <${ErrorNote} error=${error} />
      ${fires.length ? html`
        <table data-testid=${`fires-${name}`}>
          <caption>Last ${fires.length} fire times, newest first</caption>
          <thead><tr><th scope="col">Fire time</th><th scope="col">Result</th>
            <th scope="col">Task</th><th scope="col">Note</th></tr></thead>
          <tbody>${fires.map((f) => html`
            <tr>
              <td>${time(f.fireTime)}${f.manual ? " (run now)" : ""}</td>
              <td>${enumName(f.result, "SCHEDULE_FIRE_RESULT_")}${int(f.missedCount) > 1 ? ` ×${f.missedCount}` : ""}</td>
              <td>${f.taskId ? html`<a class="mono" href=${href(`tasks/${f.taskId}`)}>${f.taskId}</a>
                ${f.taskState && html` <${StateBadge} value=${f.taskState} />`}` : "–"}</td>
              <td>${f.message || ""}</td>
            </tr>`)}</tbody>
        </table>` : data && html`<p class="muted">No fire times yet.</p>`}
    </div>`;
}

function ScheduleRow({ schedule, onChange }) {
  const [open, setOpen] = useState(false);
  const name = schedule.name;
  const zone = schedule.spec?.timeZone || "UTC";
  const paused = schedule.state === "SCHEDULE_STATE_PAUSED";
  const info = schedule.info || {};
  const next = (info.nextFireTimes || []).slice(0, 3);
  const act = (method) => async () => {
    await call(`ScheduleService/${method}`, { name });
    onChange();
  };
  return html`
    <tr data-testid=${`schedule-${name}`}>
      <th scope="row">
        <button type="button" class="disclosure" aria-expanded=${open ? "true" : "false"}
          onClick=${() => setOpen(!open)}>${name}</button>
        ${schedule.description && html`<div class="muted">${schedule.description}</div>`}
      </th>
      <td><code>${trigger(schedule.spec)}</code></td>
      <td>${zone}</td>
      <td data-testid=${`schedule-${name}-next`}>
        ${next.length ? html`<ul class="plain">${next.map((t) => html`<li>${time(t, zone)}</li>`)}</ul>` : "–"}
      </td>
      <td>${schedule.task?.type} → ${schedule.task?.queue || "default"}</td>
      <td class="num">${count(info.startedCount)} / ${count(info.skippedCount)} / ${count(info.missedCount)} / ${count(info.failedCount)}</td>
      <td data-testid=${`schedule-${name}-state`}>${enumName(schedule.state, "SCHEDULE_STATE_")}</td>
      <td class="actions">
        ${may("ScheduleService/RunSchedule") && html`<${Action} label="Run now" testid=${`run-${name}`} run=${act("RunSchedule")} />`}
        ${paused
          ? may("ScheduleService/ResumeSchedule") && html`<${Action} label="Resume" testid=${`resume-${name}`} run=${act("ResumeSchedule")} />`
          : may("ScheduleService/PauseSchedule") && html`<${Action} label="Pause" testid=${`pause-${name}`} run=${act("PauseSchedule")} />`}
      </td>
    </tr>
    ${open && html`<tr class="detail"><td colspan="8"><${Fires} name=${name} /></td></tr>`}`;
}

export function Schedules() {
  const { data, error, reload, loaded } = useLive(
    () => call("ScheduleService/ListSchedules", { pageSize: 1000 }),
    [],
    { match: (e) => Boolean(e.scheduleFire), every: 1000, poll: 15000 },
  );
  const schedules = data?.schedules || [];
  return html`
    <h1>Schedules</h1>
    <${ErrorNote} error=${error} />
    <div class="table-wrap">
      <table class="schedules" data-testid="schedules">
        <thead><tr>
          <th scope="col">Name</th><th scope="col">Trigger</th><th scope="col">Time zone</th>
          <th scope="col">Next fire times (schedule's zone)</th><th scope="col">Task</th>
          <th scope="col" class="num" title="started / skipped / missed / failed">Fires s/k/m/f</th>
          <th scope="col">State</th><th scope="col"><span class="visually-hidden">Actions</span></th>
        </tr></thead>
        <tbody>${schedules.map((s) => html`<${ScheduleRow} key=${s.name} schedule=${s} onChange=${reload} />`)}</tbody>
      </table>
    </div>
    ${loaded && !schedules.length && html`<${Empty}>No schedules. <code>taskyard schedules create</code> makes one.<//>`}`;
}
