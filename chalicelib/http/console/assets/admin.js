// Events (send one, see which runs it started) and agents (admin: create, revoke).

import { api, session } from "./api.js";
import { badge, emptyState, errorBox, field, h, replace, shortId, when } from "./dom.js";
import { forgetAgents } from "./tasks.js";
import { confirmDialog, notify } from "./ui.js";

const enc = encodeURIComponent;
const sent = []; // this page's sent events, newest first (not stored anywhere)

export async function eventsView(view, ctx) {
  const name = h("input", { type: "text", name: "name", required: true, placeholder: "order.created", autocomplete: "off", spellcheck: "false" });
  const data = h("textarea", { name: "data", rows: 4, class: "code", spellcheck: "false", value: '{\n  "id": 42\n}' });
  const out = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "primary" }, "Send event");
  const form = h(
    "form",
    { class: "card", novalidate: true },
    field("Event name", name, { name: "name", hint: "Letters, digits and . _ : -" }),
    field("Data (JSON object)", data, { name: "data" }),
    h("div", { class: "buttons" }, submit),
  );
  const listeners = h("div");
  const history = h("div");
  replace(
    view,
    h("h1", {}, "Events"),
    h("p", {}, "An event starts one run of each of the agent's active event tasks whose pattern matches its name."),
    h(
      "div",
      { class: "cols" },
      h(
        "section",
        {},
        h("h2", {}, "Send an event"),
        // The API takes events only from an agent (they start that agent's tasks).
        session.isAdmin ? h("p", { class: "card" }, "Events belong to an agent: sign in with the agent's token to send one.") : [form, out],
      ),
      h("section", {}, h("h2", {}, "Event tasks"), listeners),
    ),
    h("section", {}, h("h2", {}, "Sent from this page"), history),
  );
  const drawHistory = () =>
    replace(
      history,
      sent.length
        ? h(
            "table",
            { class: "grid" },
            h("thead", {}, h("tr", {}, ["Sent", "Name", "Event id", "Runs started"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              sent.map((e) =>
                h(
                  "tr",
                  {},
                  h("td", { "data-label": "Sent" }, when(e.at)),
                  h("td", { "data-label": "Name" }, h("code", {}, e.name)),
                  h("td", { "data-label": "Event id" }, h("code", { class: "small" }, e.event_id)),
                  h("td", { "data-label": "Runs started" }, e.runs.length ? h("ul", { class: "plain" }, e.runs.map((r) => h("li", {}, h("a", { href: `#/tasks/${enc(r.task_id)}/runs/${enc(r.run_id)}` }, `run of ${e.titles.get(r.task_id) || shortId(r.task_id)}`)))) : "none"),
                ),
              ),
            ),
          )
        : emptyState("Nothing sent yet", "Events sent here are listed until the page is reloaded."),
    );
  drawHistory();

  let titles = new Map();
  try {
    const page = await api.tasks({ schedule_kind: "event", limit: 200 });
    const tasks = (page && page.tasks) || [];
    titles = new Map(tasks.map((t) => [t.id, t.title]));
    replace(
      listeners,
      tasks.length
        ? h("ul", { class: "plain" }, tasks.map((t) => h("li", {}, h("a", { href: `#/tasks/${enc(t.id)}` }, t.title), " ", h("code", {}, t.schedule_expr || "(run now only)"), " ", badge(t.status))))
        : emptyState("No event tasks", "Create a task with schedule kind “event” to react to events."),
    );
  } catch (e) {
    replace(listeners, errorBox(e));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const errBox = form.querySelector('[data-field="data"] .field-error');
    errBox.hidden = true;
    let body;
    try {
      body = { name: name.value.trim(), data: data.value.trim() ? JSON.parse(data.value) : {} };
    } catch (err) {
      errBox.hidden = false;
      errBox.textContent = `Not valid JSON: ${err.message}`;
      return;
    }
    submit.disabled = true;
    try {
      const res = await api.sendEvent(body);
      const runs = Array.isArray(res && res.runs) ? res.runs : [];
      sent.unshift({ at: new Date().toISOString(), name: body.name, event_id: res.event_id, runs, titles });
      replace(out, h("p", { class: "ok-box" }, `Event ${body.name} accepted: ${runs.length} run${runs.length === 1 ? "" : "s"} started.`));
      drawHistory();
    } catch (err) {
      replace(out, errorBox(err), err.errors.length ? h("ul", {}, err.errors.map((x) => h("li", {}, `${x.field}: ${x.message}`))) : null);
    } finally {
      submit.disabled = false;
    }
  });
}

export async function agentsView(view, ctx) {
  if (!session.isAdmin) {
    replace(view, h("h1", {}, "Agents"), h("p", {}, "Only the admin token can manage agents."));
    return;
  }
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 200, autocomplete: "off" });
  const created = h("div", { "aria-live": "polite" });
  const list = h("div");
  const submit = h("button", { type: "submit", class: "primary" }, "Create agent");
  const form = h("form", { class: "card inline-form", novalidate: true }, field("New agent's name", name, { name: "name" }), submit);
  replace(view, h("h1", {}, "Agents"), form, created, h("h2", {}, "All agents"), list);

  const load = async () => {
    const { agents } = await api.agents();
    forgetAgents();
    replace(
      list,
      agents && agents.length
        ? h(
            "table",
            { class: "grid" },
            h("thead", {}, h("tr", {}, ["Name", "Agent id", "Status", "Created", ""].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              agents.map((a) =>
                h(
                  "tr",
                  {},
                  h("td", { "data-label": "Name" }, h("a", { class: "row-link", href: `#/tasks?agent=${enc(a.agent_id)}` }, a.name)),
                  h("td", { "data-label": "Agent id" }, h("code", { class: "small" }, a.agent_id)),
                  h("td", { "data-label": "Status" }, badge(a.status)),
                  h("td", { "data-label": "Created" }, when(a.created_at)),
                  h("td", { "data-label": "" }, a.status === "active" ? h("button", { type: "button", class: "danger small", onclick: () => revoke(a) }, `Revoke ${a.name}`) : null),
                ),
              ),
            ),
          )
        : emptyState("No agents yet", "Create one above: its token is shown once."),
    );
  };
  const revoke = async (a) => {
    const ok = await confirmDialog({ title: `Revoke ${a.name}?`, text: "Its token stops working on the next request. This cannot be undone.", confirm: "Revoke", danger: true });
    if (ok === null) return;
    try {
      await api.revokeAgent(a.agent_id);
      notify(`${a.name} revoked`);
      await load();
    } catch (e) {
      notify(e.title, "error");
    }
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const err = form.querySelector(".field-error");
    err.hidden = true;
    if (!name.value.trim()) {
      err.hidden = false;
      err.textContent = "Give the agent a name";
      return;
    }
    submit.disabled = true;
    try {
      const a = await api.createAgent(name.value.trim());
      name.value = "";
      const secret = (label, value) =>
        h("div", { class: "secret" }, h("span", { class: "k" }, label), h("code", {}, value), h("button", { type: "button", class: "ghost small", onclick: () => copy(value, label) }, `Copy ${label.toLowerCase()}`));
      replace(
        created,
        h(
          "div",
          { class: "card once", role: "alert" },
          h("h2", {}, `Agent ${a.name} created`),
          h("p", { class: "warn" }, "Copy the token and signing secret now: they are shown only this once and cannot be read again."),
          secret("Token", a.token),
          secret("Signing secret", a.signing_secret),
          h("p", { class: "muted small" }, "Agent id ", h("code", {}, a.agent_id)),
          h("button", { type: "button", onclick: () => replace(created) }, "I have stored them"),
        ),
      );
      await load();
    } catch (e2) {
      err.hidden = false;
      err.textContent = e2.errors.length ? e2.errors.map((x) => x.message).join("; ") : `${e2.title}${e2.detail ? `: ${e2.detail}` : ""}`;
    } finally {
      submit.disabled = false;
    }
  });
  await load();
}

async function copy(value, label) {
  try {
    await navigator.clipboard.writeText(value);
    notify(`${label} copied`);
  } catch {
    notify("Copy failed: select the text and copy it by hand", "error");
  }
}
