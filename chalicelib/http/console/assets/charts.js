// Charts drawn as SVG from the runs the API returns: a task's run timeline, and the activity view
// (runs per hour by status over the last 24 h, start lag). Each chart has its numbers as a table.

import { api, session } from "./api.js";
import { badge, duration, emptyState, errorBox, h, parseTime, replace, svg, utcText } from "./dom.js";

const STATUS_ORDER = ["succeeded", "failed", "retrying", "running", "queued", "skipped"];
const HOUR = 3600000;
const enc = encodeURIComponent;

function runTime(r) {
  return parseTime(r.started_at) || parseTime(r.scheduled_for) || parseTime(r.queued_at);
}

const hourFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const shortFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

/** A task's runs on a time axis, one mark per run coloured by status; each mark links to its run. */
export function timeline(runs, href) {
  const pts = runs.map((r) => [r, runTime(r)]).filter(([, t]) => t);
  if (!pts.length) return null;
  const W = 800;
  const H = 64;
  const pad = 16;
  let lo = Math.min(...pts.map(([, t]) => t.getTime()));
  let hi = Math.max(...pts.map(([, t]) => t.getTime()));
  if (hi - lo < 60000) {
    lo -= 30000;
    hi += 30000;
  }
  const x = (t) => pad + ((t - lo) / (hi - lo)) * (W - 2 * pad);
  const marks = pts.map(([r, t]) =>
    svg(
      "a",
      { href: href(r), "aria-label": `${r.status} run at ${utcText(t)}` },
      svg("title", {}, `${r.status} · ${r.trigger || ""} · ${utcText(t)}`),
      svg("rect", { x: (x(t.getTime()) - 4).toFixed(1), y: 14, width: 8, height: 24, rx: 2, class: `mark s-${r.status}` }),
    ),
  );
  return h(
    "figure",
    { class: "chart timeline" },
    svg(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Timeline of ${pts.length} runs` },
      svg("line", { x1: pad, x2: W - pad, y1: 26, y2: 26, class: "axis" }),
      marks,
      svg("text", { x: pad, y: H - 6, class: "tick" }, shortFmt.format(new Date(lo))),
      svg("text", { x: W - pad, y: H - 6, class: "tick end" }, shortFmt.format(new Date(hi))),
    ),
    h("figcaption", {}, legend(new Set(pts.map(([r]) => r.status)))),
  );
}

function legend(statuses) {
  return h("span", { class: "legend" }, STATUS_ORDER.filter((s) => statuses.has(s)).map((s) => badge(s)));
}

// ---- the activity view --------------------------------------------------------------------------------------

const MAX_TASKS = 50;

async function recentRuns(since, onProgress) {
  const page = await api.tasks({ limit: MAX_TASKS });
  const tasks = (page && page.tasks) || [];
  const out = [];
  let done = 0;
  // A few requests at a time: polite to the per-agent rate limit.
  const queue = tasks.slice();
  const worker = async () => {
    while (queue.length) {
      const t = queue.shift();
      const r = await api.runs(t.id, { limit: 100 });
      for (const run of (r && r.runs) || []) {
        const at = runTime(run);
        if (at && at.getTime() >= since) out.push({ ...run, _task: t, _at: at });
      }
      onProgress(++done, tasks.length);
    }
  };
  await Promise.all([worker(), worker(), worker()]);
  return { runs: out, tasks: tasks.length, more: page && page.next_offset != null };
}

export async function activityView(view, ctx) {
  const status = h("p", { class: "muted", "aria-live": "polite" }, "Loading runs…");
  const body = h("div");
  const refresh = h("button", { type: "button", class: "ghost" }, "Refresh");
  replace(view, h("div", { class: "title-row" }, h("h1", {}, "Activity"), refresh), status, body);
  const load = async () => {
    const now = Date.now();
    const start = Math.floor((now - 23 * HOUR) / HOUR) * HOUR; // 24 hour buckets, the last one is this hour
    const { runs, tasks, more } = await recentRuns(start, (d, n) => {
      status.textContent = `Loading runs… ${d} of ${n} tasks`;
    });
    if (!ctx.alive) return;
    status.textContent = `Runs of ${session.isAdmin ? "every agent's" : "your"} ${tasks} most recently created task${tasks === 1 ? "" : "s"}${more ? ` (of more than ${MAX_TASKS})` : ""} over the last 24 hours: ${runs.length} run${runs.length === 1 ? "" : "s"}.`;
    if (!runs.length) {
      replace(body, emptyState("No runs in the last 24 hours", "Runs appear here as tasks fire or are run now."));
      return;
    }
    replace(body, h("section", {}, h("h2", {}, "Runs per hour by status"), perHour(runs, start)), h("section", {}, h("h2", {}, "Start lag"), lagChart(runs, start, now)));
  };
  refresh.addEventListener("click", () => load().catch((e) => replace(body, errorBox(e))));
  try {
    await load();
  } catch (e) {
    replace(body, errorBox(e, () => load().catch((err) => replace(body, errorBox(err)))));
  }
  ctx.every(30000, load);
}

function perHour(runs, start) {
  const buckets = Array.from({ length: 24 }, (_, i) => ({ at: start + i * HOUR, n: Object.fromEntries(STATUS_ORDER.map((s) => [s, 0])) }));
  for (const r of runs) {
    const i = Math.floor((r._at.getTime() - start) / HOUR);
    if (i >= 0 && i < 24 && r.status in buckets[i].n) buckets[i].n[r.status] += 1;
  }
  const max = Math.max(1, ...buckets.map((b) => STATUS_ORDER.reduce((a, s) => a + b.n[s], 0)));
  const W = 800;
  const H = 220;
  const left = 36;
  const bottom = 24;
  const bw = (W - left - 8) / 24;
  const y = (v) => H - bottom - (v / max) * (H - bottom - 10);
  const bars = buckets.map((b, i) => {
    let acc = 0;
    const rects = STATUS_ORDER.filter((s) => b.n[s]).map((s) => {
      const y0 = y(acc);
      acc += b.n[s];
      const y1 = y(acc);
      return svg("rect", { x: (left + i * bw + 2).toFixed(1), y: y1.toFixed(1), width: (bw - 4).toFixed(1), height: Math.max(1, y0 - y1).toFixed(1), class: `mark s-${s}` }, svg("title", {}, `${hourFmt.format(new Date(b.at))}: ${b.n[s]} ${s}`));
    });
    return svg("g", {}, rects);
  });
  const ticks = buckets
    .map((b, i) => (i % 3 === 0 ? svg("text", { x: (left + i * bw + bw / 2).toFixed(1), y: H - 6, class: "tick mid" }, hourFmt.format(new Date(b.at))) : null))
    .filter(Boolean);
  const grid = [0, 0.5, 1].map((f) => {
    const v = Math.round(max * f);
    return svg("g", {}, svg("line", { x1: left, x2: W - 8, y1: y(v), y2: y(v), class: "grid-line" }), svg("text", { x: left - 6, y: y(v) + 4, class: "tick end" }, String(v)));
  });
  const used = new Set(runs.map((r) => r.status));
  return h(
    "figure",
    { class: "chart" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Runs per hour by status, ${runs.length} runs in the last 24 hours` }, grid, bars, ticks),
    h("figcaption", {}, legend(used)),
    h(
      "details",
      {},
      h("summary", {}, "As a table"),
      h(
        "table",
        { class: "grid" },
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Hour"), STATUS_ORDER.map((s) => h("th", { scope: "col" }, s)))),
        h("tbody", {}, buckets.filter((b) => STATUS_ORDER.some((s) => b.n[s])).map((b) => h("tr", {}, h("td", { "data-label": "Hour" }, shortFmt.format(new Date(b.at))), STATUS_ORDER.map((s) => h("td", { "data-label": s, class: "num" }, String(b.n[s])))))),
      ),
    ),
  );
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function lagChart(runs, start, now) {
  const pts = runs.filter((r) => typeof r.start_lag_ms === "number" && r.start_lag_ms >= 0);
  if (!pts.length) return emptyState("No started runs to measure", "Start lag is the time from a run's scheduled instant to its first attempt's start.");
  const lags = pts.map((r) => r.start_lag_ms).sort((a, b) => a - b);
  const max = Math.max(1000, lags[lags.length - 1]);
  const W = 800;
  const H = 160;
  const left = 64;
  const bottom = 22;
  const x = (t) => left + ((t - start) / (now - start)) * (W - left - 8);
  const y = (v) => H - bottom - (v / max) * (H - bottom - 10);
  const dots = pts.map((r) =>
    svg(
      "a",
      { href: `#/tasks/${enc(r.task_id || r._task.id)}/runs/${enc(r.id)}` },
      svg("circle", { cx: x(r._at.getTime()).toFixed(1), cy: y(r.start_lag_ms).toFixed(1), r: 3.5, class: `mark s-${r.status}` }, svg("title", {}, `${r._task.title}: ${duration(r.start_lag_ms)}`)),
    ),
  );
  return h(
    "figure",
    { class: "chart" },
    h(
      "dl",
      { class: "stats" },
      [["p50", pct(lags, 50)], ["p95", pct(lags, 95)], ["max", lags[lags.length - 1]], ["runs", null]].map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v === null ? String(lags.length) : duration(v)))),
    ),
    svg(
      "svg",
      { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Start lag of ${pts.length} runs; p50 ${duration(pct(lags, 50))}, max ${duration(lags[lags.length - 1])}` },
      [0, 0.5, 1].map((f) => svg("g", {}, svg("line", { x1: left, x2: W - 8, y1: y(max * f), y2: y(max * f), class: "grid-line" }), svg("text", { x: left - 6, y: y(max * f) + 4, class: "tick end" }, duration(max * f)))),
      dots,
      svg("text", { x: left, y: H - 4, class: "tick" }, shortFmt.format(new Date(start))),
      svg("text", { x: W - 8, y: H - 4, class: "tick end" }, "now"),
    ),
  );
}
