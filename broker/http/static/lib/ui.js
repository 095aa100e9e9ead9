// Small shared pieces: state badges, progress bars, action buttons, error notes.

import { useState } from "preact/hooks";
import { html } from "./html.js";
import { int, state as stateName } from "./format.js";

export function StateBadge({ value }) {
  const name = stateName(value);
  return html`<span class="badge state-${name.toLowerCase()}" data-testid="state">${name}</span>`;
}

// A progress bar with room reserved for its text, so updates never move the layout.
export function ProgressBar({ progress, compact = false }) {
  const percent = Math.max(0, Math.min(100, Number(progress?.percent || 0)));
  const step = int(progress?.step);
  const total = int(progress?.totalSteps);
  const steps = total ? `step ${step} of ${total}` : "";
  const label = `${percent.toFixed(0)}%`;
  return html`
    <div class=${compact ? "progress compact" : "progress"}>
      <div
        class="bar"
        role="progressbar"
        aria-valuemin="0"
        aria-valuemax="100"
        aria-valuenow=${percent.toFixed(0)}
        aria-valuetext=${[label, steps, progress?.message].filter(Boolean).join(", ")}
        data-testid="progress"
      >
        <div class="fill" style=${{ width: `${percent}%` }}></div>
      </div>
      <span class="progress-text" data-testid="progress-text">${label}</span>
      ${!compact && html`
        <span class="progress-steps" data-testid="progress-steps">${steps}</span>
        <span class="progress-message" data-testid="progress-message">${progress?.message || ""}</span>
      `}
    </div>
  `;
}

export function ErrorNote({ error }) {
  if (!error) return null;
  const reason = error.reason ? ` (${error.reason})` : "";
  return html`<p class="error-note" role="alert">${error.message}${reason}</p>`;
}

// A button that runs an async action, disables itself meanwhile and shows the outcome.
export function Action({ label, busyLabel, run, testid, kind = "", confirm = "" }) {
  const [busy, setBusy] = useState(false);
  const [asking, setAsking] = useState(false);
  const [error, setError] = useState(null);
  const go = async () => {
    setAsking(false);
    setBusy(true);
    setError(null);
    try {
      await run();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  if (asking) {
    return html`
      <span class="confirm" role="group" aria-label=${label}>
        <span>${confirm}</span>
        <button type="button" class=${`danger ${kind}`} data-testid=${`${testid}-confirm`}
          onClick=${go}>Yes, ${label.toLowerCase()}</button>
        <button type="button" onClick=${() => setAsking(false)}>No</button>
      </span>`;
  }
  return html`
    <span class="action">
      <button type="button" class=${kind} data-testid=${testid} disabled=${busy}
        onClick=${() => (confirm ? setAsking(true) : go())}>
        ${busy ? busyLabel || `${label}…` : label}
      </button>
      ${error && html`<span class="error-note" role="alert">${error.message}</span>`}
    </span>`;
}

export function Empty({ children }) {
  return html`<p class="empty">${children}</p>`;
}
