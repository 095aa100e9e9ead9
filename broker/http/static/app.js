// The dashboard's shell: who is signed in, the navigation, the hash router, the event hub.

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { auth, call, RpcError } from "./lib/connect.js";
import { hub } from "./lib/events.js";
import { html } from "./lib/html.js";
import { parseHash } from "./lib/route.js";
import { caller, may, setCaller } from "./lib/session.js";
import { ErrorNote } from "./lib/ui.js";
import { Overview } from "./pages/overview.js";
import { Tasks } from "./pages/tasks.js";
import { TaskPage } from "./pages/task.js";
import { DeadLetters } from "./pages/dead.js";
import { Schedules } from "./pages/schedules.js";
import { Workers } from "./pages/workers.js";
import { WorkflowPage, Workflows } from "./pages/workflows.js";

// The pages, in navigation order. `needs` is the method a page cannot work without: a
// page the caller's roles do not allow is not offered (the broker refuses it anyway).
const PAGES = [
  { path: "", title: "Overview", needs: "StatsService/GetQueueStats", view: Overview },
  { path: "tasks", title: "Tasks", needs: "TaskService/ListTasks", view: Tasks },
  { path: "dead", title: "Dead letters", needs: "TaskService/RetryTask", view: DeadLetters },
  { path: "schedules", title: "Schedules", needs: "ScheduleService/ListSchedules", view: Schedules },
  { path: "workers", title: "Workers", needs: "WorkerService/ListWorkers", view: Workers },
  { path: "workflows", title: "Workflows", needs: "WorkflowService/ListWorkflows", view: Workflows },
];

// Detail routes: "#/tasks/<id>" → the task page, "#/workflows/<id>" → a workflow's graph.
const DETAILS = {
  tasks: { title: "Task", needs: "TaskService/GetTask", view: TaskPage },
  workflows: { title: "Workflow", needs: "WorkflowService/GetWorkflow", view: WorkflowPage },
};

function useRoute() {
  const [route, setRoute] = useState(parseHash());
  useEffect(() => {
    const changed = () => setRoute(parseHash());
    addEventListener("hashchange", changed);
    return () => removeEventListener("hashchange", changed);
  }, []);
  return route;
}

function LiveStatus() {
  const [status, setStatus] = useState(hub.status);
  useEffect(() => hub.onStatus(setStatus), []);
  const text = {
    live: "Live",
    connecting: "Connecting…",
    retrying: "Reconnecting…",
    refused: "No live updates",
    off: "No live updates",
  }[status];
  return html`<span class=${`live-status ${status}`} role="status" data-testid="live-status"
    data-status=${status}>${text}</span>`;
}

function SignIn({ onSignedIn, error }) {
  const [token, setToken] = useState("");
  const [failure, setFailure] = useState(error);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    auth.token = token.trim();
    try {
      await onSignedIn();
    } catch (e) {
      auth.token = "";
      setFailure(e);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <main id="main" class="signin">
      <h1>Sign in to Taskyard</h1>
      <p>This broker requires a token. Paste one from its tokens file
        (<code>taskyard token create</code> makes one); it stays in this tab only.</p>
      <form onSubmit=${submit}>
        <label for="token">Access token</label>
        <input id="token" name="token" type="password" autocomplete="off" required
          value=${token} onInput=${(e) => setToken(e.target.value)} data-testid="token" />
        <button type="submit" disabled=${busy} data-testid="sign-in">Sign in</button>
      </form>
      ${failure && failure.code !== "unauthenticated" || failure?.reason === "INVALID_TOKEN"
        ? html`<${ErrorNote} error=${failure} />` : null}
    </main>`;
}

function Nav({ pages, active }) {
  return html`
    <nav aria-label="Main">
      <ul>
        ${pages.map((p) => html`
          <li><a href=${`#/${p.path}`} aria-current=${p === active ? "page" : undefined}
            data-testid=${`nav-${p.path || "overview"}`}>${p.title}</a></li>`)}
      </ul>
    </nav>`;
}

function Shell({ onSignOut }) {
  const route = useRoute();
  const me = caller();
  const pages = PAGES.filter((p) => may(p.needs));
  const [first, second] = route.parts;
  let page = pages.find((p) => p.path === (first || ""));
  if (!first && !page) page = pages[0]; // e.g. a submitter: no overview, straight to tasks
  const detail = second && DETAILS[first] && may(DETAILS[first].needs) ? DETAILS[first] : null;
  const Detail = detail?.view;
  useEffect(() => {
    document.title = `${detail ? detail.title : page?.title || "Not found"} · Taskyard`;
  }, [page, detail]);
  return html`
    <a class="skip" href="#main" onClick=${(e) => {
      e.preventDefault();
      document.getElementById("main")?.focus();
    }}>Skip to content</a>
    <header class="top">
      <a class="brand" href="#/">Taskyard</a>
      <${Nav} pages=${pages} active=${page} />
      <div class="who">
        <${LiveStatus} />
        <span data-testid="caller">${me.name} (${(me.roles || []).join(", ")})</span>
        ${me.authenticated && html`<button type="button" onClick=${onSignOut}
          data-testid="sign-out">Sign out</button>`}
      </div>
    </header>
    <main id="main" tabindex="-1">
      ${Detail
        ? html`<${Detail} id=${second} params=${route.params} />`
        : page
          ? html`<${page.view} params=${route.params} />`
          : html`<h1>Not found</h1><p>There is no page <code>${location.hash}</code> here.</p>`}
    </main>`;
}

// Asked before the first render, in parallel with it: every page needs the answer first.
let firstCaller = call("SystemService/GetCaller");
// Its refusal (no token yet) may come before the first render awaits it: marked as handled
// here, it is not an "uncaught" error meanwhile; `load` still sees it.
firstCaller.catch(() => {});

function App() {
  const [phase, setPhase] = useState({ name: "loading" });

  const load = async () => {
    const pending = firstCaller || call("SystemService/GetCaller");
    firstCaller = null;
    const { caller: me } = await pending;
    setCaller(me);
    if (may("EventService/WatchEvents")) {
      // A queue-limited identity must name its queues (docs/events.md).
      hub.start(me.queueLimited ? { queues: me.queues } : {});
    } else {
      hub.stop();
    }
    setPhase({ name: "ready" });
  };

  useEffect(() => {
    load().catch((error) => {
      if (error instanceof RpcError && error.code === "unauthenticated") {
        auth.token = "";
        setPhase({ name: "signin", error });
      } else {
        setPhase({ name: "failed", error });
      }
    });
  }, []);

  const signOut = () => {
    auth.token = "";
    hub.stop();
    setCaller(null);
    setPhase({ name: "signin" });
  };

  if (phase.name === "loading") return html`<main id="main"><p>Loading…</p></main>`;
  if (phase.name === "signin") return html`<${SignIn} onSignedIn=${load} error=${phase.error} />`;
  if (phase.name === "failed") {
    return html`<main id="main"><h1>Taskyard</h1><${ErrorNote} error=${phase.error} /></main>`;
  }
  return html`<${Shell} onSignOut=${signOut} />`;
}

render(html`<${App} />`, document.getElementById("app"));
