// Shell: sign-in, navigation, the router, polling, dialogs, toasts and keyboard shortcuts.

import { ApiError, call, session, whenUnauthorized } from "./api.js";
import { errorBox, field, h, relative, replace } from "./dom.js";
import { confirmDialog, navigate, notify } from "./ui.js";
import { taskList, taskView, taskForm, runView } from "./tasks.js";
import { activityView } from "./charts.js";
import { agentsView, eventsView } from "./admin.js";

const main = document.getElementById("main");

// ---- per-view context: polling that stops when the view goes ---------------------------------------

class ViewContext {
  constructor() {
    this.alive = true;
    this.timers = new Set();
  }
  /** Run fn every `ms()` milliseconds (re-read each time, so a view can speed up when work is
   * under way) while this view is shown and the tab is visible. A 429 waits its Retry-After;
   * other errors are left to the next round. */
  every(ms, fn, statusEl) {
    const period = () => (typeof ms === "function" ? ms() : ms);
    const say = (text, bad) => {
      if (!statusEl) return;
      statusEl.textContent = text;
      statusEl.classList.toggle("warn", Boolean(bad));
    };
    let last = Date.now();
    let notBefore = 0;
    const tick = async () => {
      if (!this.alive) return;
      const now = Date.now();
      if (!document.hidden && now - last >= period() && now >= notBefore) {
        last = now;
        try {
          await fn();
          say(`Live: updated ${new Date().toLocaleTimeString()}`);
        } catch (e) {
          if (e instanceof ApiError && e.status === 429) notBefore = Date.now() + (e.retryAfter || 5) * 1000;
          say(`Could not refresh (${e.title || e.message}); trying again`, true);
        }
        last = Date.now();
      }
      this.later(tick, 250);
    };
    this.later(tick, 250);
  }
  later(fn, ms) {
    if (!this.alive) return;
    const id = setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, ms);
    this.timers.add(id);
  }
  stop() {
    this.alive = false;
    for (const t of this.timers) clearTimeout(t);
  }
}

// ---- routing ----------------------------------------------------------------------------------------

let current = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/tasks";
  const [path, qs] = raw.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(qs || "") };
}


async function route() {
  if (current) current.stop();
  const ctx = (current = new ViewContext());
  const { parts, query } = parseHash();
  if (!session.token) {
    showChrome(false);
    return signIn(ctx);
  }
  showChrome(true);
  const [section, id, sub, runId] = parts;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = h("div", { class: "view" });
  replace(main, view);
  try {
    if (section === "tasks" && !id) await taskList(view, ctx, query);
    else if (section === "tasks" && id === "new") await taskForm(view, ctx, null);
    else if (section === "tasks" && sub === "edit") await taskForm(view, ctx, id);
    else if (section === "tasks" && sub === "runs" && runId) await runView(view, ctx, id, runId);
    else if (section === "tasks") await taskView(view, ctx, id);
    else if (section === "activity") await activityView(view, ctx);
    else if (section === "events") await eventsView(view, ctx);
    else if (section === "agents") await agentsView(view, ctx);
    else replace(view, h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "#/tasks" }, "Back to the tasks")));
  } catch (e) {
    if (ctx.alive) replace(view, errorBox(e, () => route()));
  }
  if (ctx.alive && !view.contains(document.activeElement)) {
    const heading = view.querySelector("h1");
    if (heading) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  }
}

function showChrome(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  document.getElementById("nav-agents").hidden = !(signedIn && session.isAdmin);
  document.getElementById("who-name").textContent = signedIn
    ? session.isAdmin
      ? "Admin"
      : `Agent ${session.agentId ? session.agentId.slice(0, 8) : ""}`
    : "";
}

// ---- sign-in / sign-out --------------------------------------------------------------------------------

function signIn(ctx, message) {
  const input = h("input", { type: "password", name: "token", autocomplete: "off", spellcheck: "false", required: true });
  const status = h("div", { "aria-live": "polite" }, message ? errorBox({ title: message }) : null);
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", novalidate: true },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste an agent token to see that agent's tasks, or the admin token to see every agent."),
    field("Token", input, {
      name: "token",
      hint: "Kept in this tab's session storage only, sent as a bearer header, and cleared on sign-out.",
    }),
    status,
    button,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    if (!token) {
      replace(status, errorBox({ title: "Paste a token first" }));
      return;
    }
    button.disabled = true;
    try {
      // The admin can list agents; an agent is authenticated (not 401) but gets a 403.
      let role;
      try {
        await call("GET", "/agents", { token });
        role = "admin";
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 403) throw err;
        role = "agent";
      }
      session.start(token, role);
      input.value = "";
      route(); // to the page asked for before signing in, if any (the hash was kept)
    } catch (err) {
      replace(status, errorBox(err.status === 401 ? { title: "This token was not accepted", detail: "Check it and try again." } : err));
    } finally {
      button.disabled = false;
    }
  });
  replace(main, h("div", { class: "view narrow" }, form));
  input.focus();
}

function signOut(message) {
  session.clear();
  if (current) current.stop();
  history.replaceState(null, "", location.pathname);
  route().then(() => {
    if (message) notify(message, "error");
  });
}

whenUnauthorized(() => signOut("Your token is no longer accepted; sign in again."));

// ---- keyboard --------------------------------------------------------------------------------------------

const SHORTCUTS = [
  ["/", "Search the list"],
  ["j / k", "Next / previous row"],
  ["n", "New task"],
  ["g t · g a · g e", "Go to tasks, activity, events"],
  ["?", "This help"],
];

let pendingG = false;
document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || !session.token) return;
  const t = e.target;
  if (t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
  if (document.querySelector("dialog[open]")) return;
  if (pendingG) {
    pendingG = false;
    const to = { t: "#/tasks", a: "#/activity", e: "#/events" }[e.key];
    if (to) navigate(to);
    return;
  }
  if (e.key === "g") pendingG = true;
  else if (e.key === "/") {
    const search = main.querySelector("input[type=search]");
    if (search) {
      e.preventDefault();
      search.focus();
    }
  } else if (e.key === "n") navigate("#/tasks/new");
  else if (e.key === "j" || e.key === "k") moveRow(e.key === "j" ? 1 : -1);
  else if (e.key === "?") {
    confirmDialog({
      title: "Keyboard shortcuts",
      confirm: "Close",
      cancel: false,
      fields: [h("dl", { class: "keys" }, SHORTCUTS.map(([k, d]) => [h("dt", {}, h("kbd", {}, k)), h("dd", {}, d)]))],
    });
  }
});

function moveRow(step) {
  const links = [...main.querySelectorAll("tbody tr a.row-link")];
  if (!links.length) return;
  const at = links.indexOf(document.activeElement);
  const next = links[Math.min(links.length - 1, Math.max(0, at + step))];
  next.focus();
}

// ---- start ---------------------------------------------------------------------------------------------

document.getElementById("signout").addEventListener("click", () => signOut());
// "(3 minutes ago)" stays true while a view is open.
setInterval(() => {
  for (const t of main.querySelectorAll("time[datetime] > .rel")) t.textContent = ` (${relative(new Date(t.parentElement.getAttribute("datetime")))})`;
}, 15000);
window.addEventListener("hashchange", route);
window.addEventListener("console:reroute", route);
route();
