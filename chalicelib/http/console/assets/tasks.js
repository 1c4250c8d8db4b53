// Tasks: the list, one task (definition, next fires, run history, actions), one run, and the
// create/edit form.

import { api, ApiError, session } from "./api.js";
import {
  badge,
  duration,
  emptyState,
  errorBox,
  errorTitle,
  field,
  h,
  inZone,
  json,
  parseTime,
  redraw,
  replace,
  shortId,
  utcText,
  viewerZone,
  when,
} from "./dom.js";
import { confirmDialog, navigate, notify } from "./ui.js";
import { timeline } from "./charts.js";

const STATUSES = ["active", "paused", "canceled", "completed"];
const KINDS = ["cron", "rrule", "once", "event"];
const UNFINISHED = new Set(["queued", "running", "retrying"]);
const enc = encodeURIComponent;

let agentNames = null; // admin only: agent id -> name, loaded once per page load
async function agentsById() {
  if (!session.isAdmin) return new Map();
  if (!agentNames) {
    const { agents } = await api.agents();
    agentNames = new Map((agents || []).map((a) => [a.agent_id, a]));
  }
  return agentNames;
}
export function forgetAgents() {
  agentNames = null;
}

function select(name, label, options, value) {
  return h(
    "select",
    { name, "aria-label": label, value },
    options.map(([v, text]) => h("option", { value: v }, text)),
  );
}

function scheduleText(t) {
  if (t.schedule_kind === "event") return t.schedule_expr ? `on event ${t.schedule_expr}` : "on run now only";
  return `${t.schedule_kind} ${t.schedule_expr ?? ""}`.trim();
}

// ---- the list -------------------------------------------------------------------------------------------

export async function taskList(view, ctx, query) {
  const f = {
    status: query.get("status") || "",
    kind: query.get("kind") || "",
    agent: query.get("agent") || "",
    q: query.get("q") || "",
  };
  const agents = await agentsById();
  const search = h("input", {
    type: "search",
    name: "q",
    placeholder: "Filter by title, description, id or schedule",
    "aria-label": "Filter by text",
    value: f.q,
  });
  const controls = [
    select("status", "Status", [["", "Any status"], ...STATUSES.map((s) => [s, s])], f.status),
    select("kind", "Schedule kind", [["", "Any kind"], ...KINDS.map((k) => [k, k])], f.kind),
  ];
  if (session.isAdmin) {
    controls.push(
      select("agent", "Agent", [["", "Every agent"], ...[...agents.values()].map((a) => [a.agent_id, a.name || shortId(a.agent_id)])], f.agent),
    );
  }
  const filters = h("form", { class: "filters", role: "search", onsubmit: (e) => e.preventDefault() }, search, controls);
  const body = h("div");
  const more = h("button", { type: "button", class: "ghost", hidden: true }, "Load more");
  replace(
    view,
    h("div", { class: "title-row" }, h("h1", {}, "Tasks"), h("a", { class: "button primary", href: "#/tasks/new" }, "New task")),
    filters,
    body,
    more,
  );

  let tasks = [];
  let next = null;
  const load = async (offset, limit) => {
    const page = await api.tasks({ status: f.status, schedule_kind: f.kind, created_by: f.agent, limit, offset });
    return { list: Array.isArray(page && page.tasks) ? page.tasks : [], next: page ? page.next_offset ?? null : null };
  };
  const draw = () => {
    const needle = f.q.trim().toLowerCase();
    const shown = needle
      ? tasks.filter((t) =>
          [t.title, t.description, t.id, t.schedule_expr, t.schedule_kind].some((v) => String(v ?? "").toLowerCase().includes(needle)),
        )
      : tasks;
    more.hidden = next === null;
    if (!tasks.length) {
      const any = f.status || f.kind || f.agent;
      replace(
        body,
        emptyState(
          any ? "No tasks match these filters" : "No tasks yet",
          any ? "Change the filters to see more." : "Create one here, or have an agent POST /tasks.",
          any ? null : h("a", { class: "button primary", href: "#/tasks/new" }, "Create a task"),
        ),
      );
      return;
    }
    if (!shown.length) {
      replace(body, emptyState("No loaded task matches the text", next !== null ? "Load more to search further." : null));
      return;
    }
    redraw(body, JSON.stringify(shown), () =>
      replace(body, taskTable(shown, agents), h("p", { class: "muted small" }, `${shown.length} of ${tasks.length} loaded`)),
    );
  };
  const refresh = async (limit) => {
    const r = await load(0, limit);
    tasks = r.list;
    next = r.next;
    draw();
  };
  const syncUrl = () => {
    const qs = new URLSearchParams(Object.entries(f).filter(([, v]) => v)).toString();
    history.replaceState(null, "", `#/tasks${qs ? `?${qs}` : ""}`);
  };
  search.addEventListener("input", () => {
    f.q = search.value;
    syncUrl();
    draw();
  });
  for (const c of controls) {
    c.addEventListener("change", async () => {
      f[c.name] = c.value;
      syncUrl();
      try {
        await refresh(50);
      } catch (e) {
        replace(body, errorBox(e));
      }
    });
  }
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const r = await load(next, 50);
      tasks = tasks.concat(r.list);
      next = r.next;
      draw();
    } catch (e) {
      notify(e.title || "Could not load more", "error");
    } finally {
      more.disabled = false;
    }
  });
  replace(body, h("p", { class: "muted" }, "Loading tasks…"));
  try {
    await refresh(50);
  } catch (e) {
    replace(body, errorBox(e, () => refresh(50).catch((err) => replace(body, errorBox(err)))));
  }
  // Live: refresh what is loaded (up to the API's page limit).
  ctx.every(10000, async () => {
    const r = await load(0, Math.min(200, Math.max(50, tasks.length)));
    tasks = r.list;
    next = r.next;
    if (ctx.alive) draw();
  });
}

function taskTable(tasks, agents) {
  const admin = session.isAdmin;
  const cols = ["Task", "Schedule", "Status", "Next run", "Last run", "Runs", "Failures"];
  if (admin) cols.splice(1, 0, "Agent");
  return h(
    "table",
    { class: "grid tasks" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      tasks.map((t) => {
        const agent = agents.get(t.created_by);
        const cells = [
          h("td", { "data-label": "Task" }, h("a", { class: "row-link", href: `#/tasks/${enc(t.id)}` }, t.title || "(untitled)"), h("div", { class: "muted small" }, shortId(t.id))),
          h("td", { "data-label": "Schedule" }, h("code", {}, scheduleText(t)), t.timezone && t.timezone !== "UTC" ? h("div", { class: "muted small" }, t.timezone) : null),
          h("td", { "data-label": "Status" }, badge(t.status), t.schedule_error ? h("div", { class: "small warn" }, "schedule error") : null),
          h("td", { "data-label": "Next run" }, when(t.next_run_at)),
          h("td", { "data-label": "Last run" }, t.last_run_status ? badge(t.last_run_status) : null, " ", when(t.last_run_at, { empty: t.last_run_status ? "" : "never" })),
          h("td", { "data-label": "Runs", class: "num" }, String(t.run_count ?? 0)),
          h("td", { "data-label": "Failures", class: "num" }, String(t.failure_count ?? 0)),
        ];
        if (admin) cells.splice(1, 0, h("td", { "data-label": "Agent" }, agent ? agent.name : shortId(t.created_by)));
        return h("tr", {}, cells);
      }),
    ),
  );
}

// ---- one task ---------------------------------------------------------------------------------------------

function notFound(view, what, id) {
  replace(
    view,
    h("h1", {}, `${what} not found`),
    h("p", {}, `No ${what.toLowerCase()} with id `, h("code", {}, id), " is visible to this token: it does not exist, or it belongs to another agent."),
    h("p", {}, h("a", { href: "#/tasks" }, "Back to the tasks")),
  );
}

export async function taskView(view, ctx, id) {
  let task;
  try {
    task = (await api.task(id)).data;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return notFound(view, "Task", id);
    throw e;
  }
  const head = h("div");
  const summary = h("div");
  const fires = h("section", { "aria-labelledby": "fires-h" });
  const runsBox = h("div");
  const definition = h("section", { "aria-labelledby": "def-h" });
  const live = h("p", { class: "muted small live" }, "Live: refreshes every 10 s, every 1.5 s while a run is under way");
  replace(
    view,
    h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Tasks"), " / ", shortId(id)),
    head,
    summary,
    h("div", { class: "cols wide-left" }, fires, definition),
    h("section", { "aria-labelledby": "runs-h" }, h("div", { class: "title-row" }, h("h2", { id: "runs-h" }, "Runs"), live), runsBox),
  );

  let runs = [];
  let cursor = null;
  let olderLoaded = false;
  let lastRunNow = 0;

  const drawTask = () => {
    const key = JSON.stringify(task);
    redraw(head, key, () => replace(head, h("div", { class: "title-row" }, h("h1", {}, task.title || "(untitled)"), badge(task.status)), actions(task)));
    redraw(summary, key, () => replace(summary, taskSummary(task)));
    redraw(definition, key, () => replace(definition, h("h2", { id: "def-h" }, "Definition"), taskDefinition(task)));
  };
  const drawRuns = () => {
    if (!runs.length) {
      redraw(runsBox, "none", () => replace(runsBox, emptyState("No runs yet", task.status === "active" ? "Runs appear here as they start; Run now starts one at once." : null)));
      return;
    }
    redraw(runsBox, JSON.stringify([runs, cursor]), () =>
      replace(
        runsBox,
        timeline(runs, (r) => `#/tasks/${enc(id)}/runs/${enc(r.id)}`),
        runTable(id, runs),
        cursor ? h("button", { type: "button", class: "ghost", onclick: loadOlder }, "Load older runs") : null,
      ),
    );
  };
  const loadRuns = async () => {
    const page = await api.runs(id, { limit: 50 });
    const fresh = Array.isArray(page && page.runs) ? page.runs : [];
    if (olderLoaded) {
      // Fresh copies of the newest page, then the older pages already loaded.
      const ids = new Set(fresh.map((r) => r.id));
      runs = fresh.concat(runs.filter((r) => !ids.has(r.id)));
    } else {
      runs = fresh;
      cursor = page ? page.next_cursor ?? null : null;
    }
    drawRuns();
  };
  async function loadOlder() {
    try {
      const page = await api.runs(id, { limit: 50, cursor });
      const ids = new Set(runs.map((r) => r.id));
      runs = runs.concat((page.runs || []).filter((r) => !ids.has(r.id)));
      cursor = page.next_cursor ?? null;
      olderLoaded = true;
      drawRuns();
    } catch (e) {
      notify(e.title, "error");
    }
  }
  const loadFires = async () => {
    replace(fires, h("h2", { id: "fires-h" }, "Next fires"), await nextFires(task));
  };
  const reloadTask = async () => {
    task = (await api.task(id)).data;
    drawTask();
  };

  function actions(t) {
    const act = async (name, opts, body) => {
      const values = await confirmDialog(opts);
      if (values === null) return;
      try {
        const payload = body ? body(values) : undefined;
        const out = await api.action(id, name, payload);
        if (name === "run_now") {
          lastRunNow = Date.now();
          notify("Run queued");
          await loadRuns();
          await reloadTask();
        } else {
          task = out && out.id ? out : (await api.task(id)).data;
          drawTask();
          notify(`Task ${opts.done}`);
          await loadFires();
        }
      } catch (e) {
        notify(`${errorTitle(e)}${e.detail ? `: ${e.detail}` : ""}`, "error");
      }
    };
    const s = t.status;
    const b = (label, on, enabled = true, cls = "") => h("button", { type: "button", class: cls, onclick: on, disabled: !enabled }, label);
    return h(
      "div",
      { class: "actions", role: "toolbar", "aria-label": "Task actions" },
      b(
        "Run now",
        () =>
          act(
            "run_now",
            {
              title: "Run this task now?",
              text: "One run starts at once, outside the schedule; the next scheduled fire does not move.",
              confirm: "Run now",
              fields: [field("Input (JSON, optional)", h("textarea", { name: "input", rows: 3, placeholder: '{"why": "manual"}' }), { name: "input" })],
            },
            (v) => (v.input && v.input.trim() ? { input: JSON.parse(v.input) } : {}),
          ),
        s !== "canceled",
        "primary",
      ),
      s === "paused"
        ? b("Resume", () => act("resume", { title: "Resume this task?", text: "The next fire is computed from now; fires missed while paused do not run.", confirm: "Resume", done: "resumed" }))
        : b("Pause", () => act("pause", { title: "Pause this task?", text: "No scheduled or event run starts while it is paused.", confirm: "Pause", done: "paused" }), s === "active"),
      b(
        "Snooze",
        () =>
          act(
            "snooze",
            {
              title: "Snooze the next run",
              text: "The next scheduled run moves later; the cadence after it is unchanged.",
              confirm: "Snooze",
              done: "snoozed",
              fields: [
                field("Delay (minutes)", h("input", { type: "number", name: "minutes", min: 1, max: 10080, value: 60, required: true }), { name: "minutes" }),
                field("Reason", h("input", { type: "text", name: "reason", maxlength: 500, placeholder: "db maintenance" }), { name: "reason" }),
              ],
            },
            (v) => ({ delay_seconds: Math.round(Number(v.minutes) * 60), ...(v.reason ? { reason: v.reason } : {}) }),
          ),
        s === "active",
      ),
      s === "canceled" ? b("Edit", null, false) : h("a", { class: "button", href: `#/tasks/${enc(id)}/edit` }, "Edit"),
      b(
        "Cancel task",
        () => act("cancel", { title: "Cancel this task for good?", text: "Pending runs are skipped and the task can never run or change again.", confirm: "Cancel task", danger: true, done: "canceled" }),
        s !== "canceled",
        "danger",
      ),
    );
  }

  drawTask();
  replace(runsBox, h("p", { class: "muted" }, "Loading runs…"));
  await Promise.all([loadFires().catch((e) => replace(fires, h("h2", { id: "fires-h" }, "Next fires"), errorBox(e))), loadRuns().catch((e) => replace(runsBox, errorBox(e)))]);

  // Live refresh: quick while work is under way (or just asked for), slow otherwise.
  const busy = () => runs.some((r) => UNFINISHED.has(r.status)) || Date.now() - lastRunNow < 15000;
  ctx.every(
    () => (busy() ? 1500 : 10000),
    async () => {
      await loadRuns();
      await reloadTask();
    },
    live,
  );
}

function taskSummary(t) {
  const items = [
    ["Next run", when(t.next_run_at, { empty: "nothing scheduled" })],
    ["Last run", h("span", {}, t.last_run_status ? badge(t.last_run_status) : null, " ", when(t.last_run_at, { empty: "never" }))],
    ["Runs", String(t.run_count ?? 0)],
    ["Failures", String(t.failure_count ?? 0)],
  ];
  if (t.snoozed_until) items.push(["Snoozed until", h("span", {}, when(t.snoozed_until), t.snooze_reason ? ` — ${t.snooze_reason}` : "")]);
  const cards = h("dl", { class: "stats" }, items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
  const problem = t.schedule_error
    ? h("div", { class: "error-box", role: "alert" }, h("strong", {}, "Schedule error"), h("p", {}, typeof t.schedule_error === "string" ? t.schedule_error : JSON.stringify(t.schedule_error)))
    : null;
  return h("div", {}, cards, problem);
}

const KNOWN = new Set([
  "id", "created_by", "title", "description", "schedule_kind", "schedule_expr", "timezone", "payload", "priority",
  "max_retries", "backoff_strategy", "dedupe_key", "dedupe_window_seconds", "concurrency_key", "concurrency_limit",
  "jitter_seconds", "starts_at", "ends_at", "misfire_policy", "status", "next_run_at", "last_run_at", "last_run_status",
  "run_count", "failure_count", "snoozed_until", "snooze_reason", "created_at", "updated_at", "version", "schedule_error",
]);

function taskDefinition(t) {
  const row = (k, v) => (v === null || v === undefined || v === "" ? null : h("div", {}, h("dt", {}, k), h("dd", {}, v)));
  const maxRetries = t.max_retries ?? 3;
  const extra = Object.keys(t).filter((k) => !KNOWN.has(k));
  return h(
    "div",
    {},
    t.description ? h("p", { class: "description" }, t.description) : null,
    h(
      "dl",
      { class: "props" },
      row("Schedule", h("code", {}, scheduleText(t))),
      row("Timezone", t.timezone || "UTC"),
      row("Priority", t.priority != null ? `${t.priority} (1 is highest)` : null),
      row("Retries", `${maxRetries} (up to ${maxRetries + 1} attempts), ${String(t.backoff_strategy || "exponential_jitter").replace(/_/g, " ")} backoff`),
      row("Missed fires", t.misfire_policy ? t.misfire_policy.replace(/_/g, " ") : null),
      row("Jitter", t.jitter_seconds ? `${t.jitter_seconds} s` : null),
      row("Starts", t.starts_at ? when(t.starts_at, { rel: false }) : null),
      row("Ends", t.ends_at ? when(t.ends_at, { rel: false }) : null),
      row("Dedupe", t.dedupe_key ? `${t.dedupe_key} within ${t.dedupe_window_seconds ?? 3600} s` : null),
      row("Concurrency", t.concurrency_key ? `${t.concurrency_key}, at most ${t.concurrency_limit ?? 1} at once` : null),
      row("Agent", h("code", {}, t.created_by || "—")),
      row("Created", when(t.created_at)),
      row("Updated", when(t.updated_at)),
      row("Version", t.version != null ? String(t.version) : null),
      extra.map((k) => row(k.replace(/_/g, " "), typeof t[k] === "object" ? json(t[k]) : String(t[k]))),
    ),
    h("h3", {}, "Pipeline"),
    pipeline(t.payload),
  );
}

// ---- pipelines, readable --------------------------------------------------------------------------------

function stepLines(step) {
  const kv = (k, v) => (v === undefined || v === null ? null : h("div", { class: "kv" }, h("span", { class: "k" }, k), typeof v === "object" ? json(v) : h("code", {}, String(v))));
  switch (step.type) {
    case "http":
      return [h("div", { class: "step-main" }, h("strong", {}, step.method || "GET"), " ", h("code", {}, step.url || "")), kv("query", step.query), kv("headers", step.headers), kv("body", step.body), kv("expect status", step.expect_status)];
    case "log":
      return [h("div", { class: "step-main" }, "log ", h("code", {}, typeof step.message === "string" ? step.message : JSON.stringify(step.message)))];
    case "emit":
      return [h("div", { class: "step-main" }, "emit event ", h("code", {}, step.name || "")), kv("data", step.data)];
    case "lambda":
      return [h("div", { class: "step-main" }, "invoke ", h("code", {}, step.function_name || ""), step.invocation_type ? ` (${step.invocation_type})` : ""), kv("payload", step.payload)];
    case "sqs":
      return [h("div", { class: "step-main" }, "send to ", h("code", {}, step.queue_url || "")), kv("message", step.message_body), kv("attributes", step.message_attributes)];
    case "sns":
      return [h("div", { class: "step-main" }, "publish to ", h("code", {}, step.topic_arn || "")), kv("subject", step.subject), kv("message", step.message)];
    case "eventbridge":
      return [h("div", { class: "step-main" }, "put event on ", h("code", {}, step.event_bus_name || "default")), kv("source", step.source), kv("detail type", step.detail_type), kv("detail", step.detail)];
    default: {
      const rest = { ...step };
      delete rest.id;
      delete rest.type;
      return [json(rest)];
    }
  }
}

function pipeline(payload, { raw = true } = {}) {
  const steps = payload && Array.isArray(payload.steps) ? payload.steps : null;
  if (!steps) return raw ? json(payload) : h("p", { class: "muted" }, 'A pipeline is {"steps": [...]}.');
  return h(
    "div",
    {},
    h(
      "ol",
      { class: "steps" },
      steps.map((s) =>
        h(
          "li",
          { class: "step" },
          h("div", { class: "step-head" }, h("span", { class: "step-id" }, s.id), h("span", { class: "tag" }, s.type), s.timeout_seconds ? h("span", { class: "tag" }, `timeout ${s.timeout_seconds} s`) : null, s.continue_on_error ? h("span", { class: "tag" }, "continues on error") : null),
          stepLines(s),
        ),
      ),
    ),
    raw ? h("details", {}, h("summary", {}, "Pipeline as JSON"), json(payload)) : null,
  );
}

// ---- next fires -------------------------------------------------------------------------------------------

async function nextFires(task) {
  if (task.schedule_kind === "event") {
    return h("p", {}, task.schedule_expr ? ["Runs whenever an event matching ", h("code", {}, task.schedule_expr), " arrives."] : "Runs only when started with Run now.");
  }
  if (task.status === "canceled" || task.status === "completed") return h("p", { class: "muted" }, `Nothing is scheduled: the task is ${task.status}.`);
  const preview = await api.preview(task.id, 10);
  const list = Array.isArray(preview && preview.next_runs) ? preview.next_runs : [];
  return firesTable(list, task.timezone || "UTC", preview && preview.description, task.status === "paused" ? "Paused: these fires run only if it is resumed before them." : null);
}

export function firesTable(list, tz, description, note) {
  if (!list.length) return h("div", {}, description ? h("p", {}, description) : null, emptyState("No more fires", "The schedule has no fire after now."));
  const zone = viewerZone();
  let prev = inZone(new Date(), tz).offset;
  const rows = [];
  list.forEach((iso, i) => {
    const d = parseTime(iso);
    if (!d) return;
    const local = inZone(d, tz);
    if (local.offset !== prev) {
      rows.push(h("tr", { class: "dst" }, h("td", { colspan: 4 }, `Clock change in ${tz}: ${prev} → ${local.offset}`)));
    }
    prev = local.offset;
    rows.push(
      h(
        "tr",
        {},
        h("td", { "data-label": "#", class: "num" }, String(i + 1)),
        h("td", { "data-label": tz }, local.text, h("span", { class: "muted small" }, ` ${local.offset}`)),
        h("td", { "data-label": "UTC" }, h("code", { class: "nowrap" }, utcText(d))),
        h("td", { "data-label": `Your time (${zone})` }, when(iso, { rel: false })),
      ),
    );
  });
  return h(
    "div",
    {},
    description ? h("p", {}, h("strong", {}, description)) : null,
    note ? h("p", { class: "warn" }, note) : null,
    h(
      "table",
      { class: "grid fires" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "#"), h("th", { scope: "col" }, `In ${tz}`), h("th", { scope: "col" }, "UTC"), h("th", { scope: "col" }, `Your time (${zone})`))),
      h("tbody", {}, rows),
    ),
  );
}

// ---- runs -----------------------------------------------------------------------------------------------------

function runTable(taskId, runs) {
  return h(
    "table",
    { class: "grid runs" },
    h("thead", {}, h("tr", {}, ["Run", "Status", "Trigger", "Attempts", "Start lag", "Duration", "Started"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      runs.map((r) =>
        h(
          "tr",
          {},
          h("td", { "data-label": "Run" }, h("a", { class: "row-link", href: `#/tasks/${enc(taskId)}/runs/${enc(r.id)}` }, r.scheduled_for ? when(r.scheduled_for, { rel: false }) : shortId(r.id))),
          h("td", { "data-label": "Status" }, badge(r.status, r.skip_reason ? r.skip_reason.replace(/_/g, " ") : null)),
          h("td", { "data-label": "Trigger" }, String(r.trigger ?? "—").replace(/_/g, " ")),
          h("td", { "data-label": "Attempts", class: "num" }, `${r.attempt ?? 0} / ${r.max_attempts ?? "?"}`),
          h("td", { "data-label": "Start lag", class: "num" }, duration(r.start_lag_ms)),
          h("td", { "data-label": "Duration", class: "num" }, duration(r.duration_ms)),
          h("td", { "data-label": "Started" }, when(r.started_at, { empty: UNFINISHED.has(r.status) ? "waiting" : "—" })),
        ),
      ),
    ),
  );
}

export async function runView(view, ctx, taskId, runId) {
  const draw = (r) => {
    const rows = [
      ["Status", badge(r.status, r.skip_reason ? r.skip_reason.replace(/_/g, " ") : null)],
      ["Trigger", String(r.trigger ?? "—").replace(/_/g, " ")],
      ["Attempt", `${r.attempt ?? 0} of ${r.max_attempts ?? "?"}`],
      ["Scheduled for", when(r.scheduled_for)],
      ["Queued", when(r.queued_at)],
      ["Started", when(r.started_at)],
      ["Finished", when(r.finished_at)],
      ["Start lag", duration(r.start_lag_ms)],
      ["Duration", duration(r.duration_ms)],
      r.next_attempt_at ? ["Next attempt", when(r.next_attempt_at)] : null,
    ].filter(Boolean);
    replace(
      view,
      h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Tasks"), " / ", h("a", { href: `#/tasks/${enc(taskId)}` }, shortId(taskId)), " / run"),
      h("div", { class: "title-row" }, h("h1", {}, "Run ", h("code", { class: "small" }, r.id)), badge(r.status)),
      r.error ? h("div", { class: "error-box", role: "alert" }, h("strong", {}, r.error.type || "error", r.error.step ? ` in step ${r.error.step}` : ""), h("p", {}, r.error.message || "")) : null,
      h("dl", { class: "props" }, rows.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
      h("h2", {}, "Steps"),
      stepResults(r.steps),
      h("h2", {}, "Attempts"),
      attempts(r),
      r.input != null ? [h("h2", {}, "Input"), json(r.input)] : null,
      r.event != null ? [h("h2", {}, "Event"), json(r.event)] : null,
    );
  };
  let run;
  try {
    run = await api.run(taskId, runId);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return notFound(view, "Run", runId);
    throw e;
  }
  draw(run);
  ctx.every(
    () => (UNFINISHED.has(run.status) ? 1500 : 15000),
    async () => {
      if (!UNFINISHED.has(run.status)) return;
      run = await api.run(taskId, runId);
      if (ctx.alive) draw(run);
    },
  );
}

function stepResults(steps) {
  if (!Array.isArray(steps) || !steps.length) return emptyState("No step has run yet");
  return h(
    "ol",
    { class: "steps" },
    steps.map((s) =>
      h(
        "li",
        { class: "step" },
        h("div", { class: "step-head" }, h("span", { class: "step-id" }, s.id), h("span", { class: "tag" }, s.type), badge(s.status), h("span", { class: "muted small" }, duration(s.duration_ms)), s.started_at ? when(s.started_at, { rel: false }) : null),
        s.error ? h("div", { class: "error-box" }, h("strong", {}, (s.error && s.error.type) || "error"), h("p", {}, typeof s.error === "string" ? s.error : s.error.message || JSON.stringify(s.error))) : null,
        s.output !== undefined && s.output !== null ? [h("div", { class: "k" }, "Output", s.output_truncated || s.truncated ? " (truncated at 8 KiB)" : ""), json(s.output)] : null,
      ),
    ),
  );
}

function attempts(r) {
  if (Array.isArray(r.attempts) && r.attempts.length) {
    const cols = [...new Set(r.attempts.flatMap((a) => Object.keys(a || {})))].slice(0, 8);
    return h(
      "table",
      { class: "grid" },
      h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c.replace(/_/g, " "))))),
      h("tbody", {}, r.attempts.map((a) => h("tr", {}, cols.map((c) => h("td", { "data-label": c }, /_at$/.test(c) ? when(a[c], { rel: false }) : typeof a[c] === "object" && a[c] !== null ? JSON.stringify(a[c]) : String(a[c] ?? "—")))))),
    );
  }
  const n = r.attempt ?? 0;
  const lines = [h("p", {}, n ? `${n} attempt${n === 1 ? "" : "s"} of at most ${r.max_attempts ?? "?"}.` : "Not attempted yet.")];
  if (r.status === "retrying" && r.next_attempt_at) lines.push(h("p", {}, "The last attempt failed; the next one starts ", when(r.next_attempt_at), "."));
  if (r.error && n > 1) lines.push(h("p", { class: "muted" }, "The error above is the last attempt's."));
  return h("div", {}, lines);
}

// ---- create / edit -----------------------------------------------------------------------------------------

const EXAMPLE = { steps: [{ id: "hello", type: "log", message: "hello from {{ task.title }}" }] };
const HINTS = {
  cron: "5 fields (minute hour day month weekday) or @hourly, @daily…  e.g. 30 2 * * *",
  rrule: "RFC 5545, e.g. FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0",
  once: "An ISO 8601 time, e.g. 2030-01-01T09:00:00 (read in the timezone unless it has an offset)",
  event: "An event name pattern: order.created, order.* or * (empty: runs only on Run now)",
};

export async function taskForm(view, ctx, id) {
  let task = null;
  if (id) {
    try {
      task = (await api.task(id)).data;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return notFound(view, "Task", id);
      throw e;
    }
  }
  const agents = session.isAdmin ? await agentsById() : new Map();
  const v = (k, d = "") => (task && task[k] != null ? task[k] : d);
  const input = (name, attrs = {}) => h("input", { name, type: "text", value: String(v(name, attrs.def ?? "")), ...attrs, def: null });
  const num = (name, min, max, placeholder) => input(name, { type: "number", min, max, placeholder, inputmode: "numeric" });
  const kind = h("select", { name: "schedule_kind", value: v("schedule_kind", "cron") }, KINDS.map((k) => h("option", { value: k }, k)));
  const expr = input("schedule_expr", { def: task ? "" : "*/5 * * * *", autocomplete: "off", spellcheck: "false" });
  const tz = input("timezone", { def: "UTC", list: "zones", autocomplete: "off" });
  const zones = h("datalist", { id: "zones" }, (Intl.supportedValuesOf ? Intl.supportedValuesOf("timeZone") : ["UTC"]).map((z) => h("option", { value: z })));
  const exprField = field("Schedule", expr, { name: "schedule_expr", hint: HINTS[kind.value] });
  kind.addEventListener("change", () => {
    exprField.querySelector(".hint").textContent = HINTS[kind.value];
  });
  const payload = h("textarea", { name: "payload", rows: 10, spellcheck: "false", class: "code", value: JSON.stringify(task ? task.payload : EXAMPLE, null, 2) });
  // The steps as the task page will show them, kept in step with the JSON as it is typed.
  const stepsPreview = h("div", { class: "steps-preview" });
  const drawSteps = () => {
    try {
      replace(stepsPreview, pipeline(JSON.parse(payload.value), { raw: false }));
    } catch (err) {
      replace(stepsPreview, h("p", { class: "muted" }, `Not valid JSON yet: ${err.message}`));
    }
  };
  let typing;
  payload.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(drawSteps, 250);
  });
  drawSteps();
  const checkOut = h("div", { "aria-live": "polite" });
  const check = h("button", { type: "button", class: "ghost" }, "Check schedule");
  check.addEventListener("click", async () => {
    if (kind.value === "event") {
      replace(checkOut, h("p", { class: "muted" }, "Event tasks run when a matching event arrives; there are no fire times to show."));
      return;
    }
    try {
      const p = await api.previewSchedule({ schedule_kind: kind.value, schedule_expr: expr.value.trim(), timezone: tz.value.trim() || "UTC", count: 5 });
      replace(checkOut, firesTable(p.next_runs || [], tz.value.trim() || "UTC", p.description));
    } catch (e) {
      replace(checkOut, errorBox(e));
    }
  });

  const owner = session.isAdmin
    ? field("Agent", h("select", { name: "created_by", value: v("created_by"), disabled: Boolean(task) }, h("option", { value: "" }, "Choose the agent"), [...agents.values()].filter((a) => a.status !== "revoked" || (task && a.agent_id === task.created_by)).map((a) => h("option", { value: a.agent_id }, `${a.name} (${shortId(a.agent_id)})`))), { name: "created_by" })
    : null;
  const advanced = h(
    "details",
    { class: "advanced", open: Boolean(task && (task.dedupe_key || task.concurrency_key || task.jitter_seconds || task.starts_at || task.ends_at)) },
    h("summary", {}, "Retries, priority and limits"),
    h(
      "div",
      { class: "grid-form" },
      field("Priority (1 highest – 9)", num("priority", 1, 9, "5"), { name: "priority" }),
      field("Max retries (0–25)", num("max_retries", 0, 25, "3"), { name: "max_retries" }),
      field("Backoff", h("select", { name: "backoff_strategy", value: v("backoff_strategy", "") }, [["", "default (exponential jitter)"], ["exponential_jitter", "exponential jitter"], ["linear", "linear"], ["fixed", "fixed"]].map(([k, t]) => h("option", { value: k }, t))), { name: "backoff_strategy" }),
      field("Missed fires", h("select", { name: "misfire_policy", value: v("misfire_policy", "") }, [["", "default (run once)"], ["run_once", "run once"], ["skip", "skip"], ["run_all", "run all"]].map(([k, t]) => h("option", { value: k }, t))), { name: "misfire_policy" }),
      field("Jitter (s)", num("jitter_seconds", 0, 3600, "0"), { name: "jitter_seconds" }),
      field("Starts at", input("starts_at", { placeholder: "2030-01-01T00:00:00Z" }), { name: "starts_at" }),
      field("Ends at", input("ends_at", { placeholder: "2030-12-31T00:00:00Z" }), { name: "ends_at" }),
      field("Dedupe key", input("dedupe_key"), { name: "dedupe_key" }),
      field("Dedupe window (s)", num("dedupe_window_seconds", 1, 2592000, "3600"), { name: "dedupe_window_seconds" }),
      field("Concurrency key", input("concurrency_key"), { name: "concurrency_key" }),
      field("Concurrency limit", num("concurrency_limit", 1, 100, "1"), { name: "concurrency_limit" }),
    ),
  );
  const formError = h("div", { "aria-live": "assertive" });
  const submit = h("button", { type: "submit", class: "primary" }, task ? "Save changes" : "Create task");
  const form = h(
    "form",
    { class: "card task-form", novalidate: true },
    owner,
    field("Title", input("title", { maxlength: 200, required: true }), { name: "title" }),
    field("Description", h("textarea", { name: "description", rows: 2, maxlength: 4000, value: v("description") }), { name: "description" }),
    h("div", { class: "grid-form" }, field("Schedule kind", kind, { name: "schedule_kind" }), exprField, field("Timezone", tz, { name: "timezone", hint: `IANA name; yours is ${viewerZone()}` })),
    zones,
    h("div", { class: "check" }, check, checkOut),
    field("Pipeline (JSON)", payload, { name: "payload", hint: "{\"steps\": [...]}: http, log, emit, lambda, sqs, sns or eventbridge steps, run in order" }),
    h("details", { class: "advanced", open: true }, h("summary", {}, "The steps, as they will run"), stepsPreview),
    advanced,
    formError,
    h("div", { class: "buttons" }, submit, h("a", { class: "button ghost", href: task ? `#/tasks/${enc(task.id)}` : "#/tasks" }, "Cancel")),
  );
  replace(
    view,
    h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Tasks"), task ? [" / ", h("a", { href: `#/tasks/${enc(task.id)}` }, shortId(task.id))] : null),
    h("h1", {}, task ? `Edit “${task.title}”` : "New task"),
    form,
  );

  const NUMERIC = new Set(["priority", "max_retries", "jitter_seconds", "dedupe_window_seconds", "concurrency_limit"]);
  const OPTIONAL = ["priority", "max_retries", "backoff_strategy", "misfire_policy", "jitter_seconds", "starts_at", "ends_at", "dedupe_key", "dedupe_window_seconds", "concurrency_key", "concurrency_limit"];

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form, formError);
    const data = new FormData(form);
    const body = {};
    const local = [];
    for (const name of ["title", "description", "schedule_kind", "timezone"]) body[name] = String(data.get(name) ?? "").trim();
    if (!body.timezone) body.timezone = "UTC";
    const exprText = String(data.get("schedule_expr") ?? "").trim();
    body.schedule_expr = exprText || null;
    try {
      body.payload = JSON.parse(String(data.get("payload") || ""));
    } catch (err) {
      local.push({ field: "payload", message: `is not valid JSON (${err.message})` });
    }
    for (const name of OPTIONAL) {
      const raw = String(data.get(name) ?? "").trim();
      if (raw === "") body[name] = null;
      else if (NUMERIC.has(name)) {
        const n = Number(raw);
        if (!Number.isInteger(n)) local.push({ field: name, message: "must be a whole number" });
        body[name] = n;
      } else body[name] = raw;
    }
    if (local.length) return showErrors(form, formError, local, "Fix the highlighted fields");
    let send;
    if (task) {
      // Only what changed; a cleared optional field is sent as null.
      send = {};
      for (const [k, val] of Object.entries(body)) {
        const before = task[k] ?? null;
        if (JSON.stringify(before) !== JSON.stringify(val) && !(val === null && before === null)) send[k] = val;
      }
      if (!Object.keys(send).length) return navigate(`#/tasks/${enc(task.id)}`);
    } else {
      send = Object.fromEntries(Object.entries(body).filter(([, val]) => val !== null));
      send.created_by = session.isAdmin ? String(data.get("created_by") || "") : session.agentId;
      if (!send.created_by) return showErrors(form, formError, [{ field: "created_by", message: "choose the agent this task belongs to" }], "Fix the highlighted fields");
    }
    submit.disabled = true;
    try {
      const saved = task ? await api.update(task.id, send, task.version) : await api.create(send);
      notify(task ? "Task saved" : "Task created");
      navigate(`#/tasks/${enc(saved.id)}`);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const title = err.status === 412 ? "This task changed since you opened it" : err.title;
      const detail = err.status === 412 ? "Reload the page to edit the latest version." : err.detail;
      showErrors(form, formError, err.errors, title, detail);
    } finally {
      submit.disabled = false;
    }
  });
}

function clearErrors(form, box) {
  replace(box);
  for (const el of form.querySelectorAll(".field-error")) {
    el.hidden = true;
    el.textContent = "";
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

/** Put each field error under its control (`payload.steps[0].url` goes to `payload`); what has
 * no control is listed in the box at the end of the form. */
function showErrors(form, box, errors, title, detail) {
  const unplaced = [];
  let first = null;
  for (const { field: name, message } of errors) {
    const root = String(name).split(/[.[]/)[0];
    const wrap = form.querySelector(`.field[data-field="${CSS.escape(root)}"]`);
    if (!wrap) {
      unplaced.push(`${name || "request"}: ${message}`);
      continue;
    }
    const err = wrap.querySelector(".field-error");
    err.hidden = false;
    err.textContent = err.textContent ? `${err.textContent}; ${name !== root ? `${name}: ` : ""}${message}` : `${name !== root ? `${name}: ` : ""}${message}`;
    const control = wrap.querySelector("input, select, textarea");
    control.setAttribute("aria-invalid", "true");
    if (wrap.closest("details")) wrap.closest("details").open = true;
    first = first || control;
  }
  replace(
    box,
    h(
      "div",
      { class: "error-box", role: "alert" },
      h("strong", {}, title || "The request was refused"),
      detail && (unplaced.length || !errors.length) ? h("p", {}, detail) : null,
      !unplaced.length && errors.length ? h("p", {}, "See the messages under the highlighted fields.") : null,
      unplaced.length ? h("ul", {}, unplaced.map((t) => h("li", {}, t))) : null,
    ),
  );
  (first || box).focus?.();
}
