// DOM and formatting helpers. Everything is built with createElement and text nodes: no HTML
// strings anywhere (the CSP's Trusted Types would refuse them anyway).

const SVG_NS = "http://www.w3.org/2000/svg";

function build(el, attrs, children) {
  let value;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "value") value = v;
    else if (k === "checked" || k === "disabled" || k === "selected") el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  if (value !== undefined) el.value = value; // after the options of a <select> exist
  return el;
}

/** h("a", {href: "#/x"}, "text", child, [more]) */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function replace(el, ...children) {
  el.replaceChildren();
  drawn.delete(el); // what redraw() drew is gone
  return build(el, {}, children);
}

const drawn = new WeakMap(); // container -> the key of what redraw() last drew in it

/** Redraw `container` only when `key` (what it shows) changed, and give focus back to the link or
 * button that had it: polling must not pull a keyboard user out of the table they are in. */
export function redraw(container, key, draw) {
  if (drawn.get(container) === key) return;
  const active = document.activeElement;
  const mark = active && container.contains(active) ? active.getAttribute("href") || active.textContent : null;
  draw();
  drawn.set(container, key);
  if (mark === null) return;
  const again = [...container.querySelectorAll("a, button")].find((el) => (el.getAttribute("href") || el.textContent) === mark);
  if (again) again.focus({ preventScroll: true });
}

// ---- time ------------------------------------------------------------------------------------

const LOCAL = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
const REL = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

export function parseTime(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function utcText(d) {
  return d.toISOString().replace(".000Z", "Z");
}

export function relative(d, now = Date.now()) {
  const s = Math.round((d.getTime() - now) / 1000);
  const a = Math.abs(s);
  if (a < 45) return REL.format(s, "second");
  if (a < 45 * 60) return REL.format(Math.round(s / 60), "minute");
  if (a < 36 * 3600) return REL.format(Math.round(s / 3600), "hour");
  return REL.format(Math.round(s / 86400), "day");
}

/** A timestamp in the viewer's zone, with UTC on hover (and in the datetime attribute). */
export function when(iso, { rel = true, empty = "—" } = {}) {
  const d = parseTime(iso);
  if (!d) return h("span", { class: "muted" }, iso ? String(iso) : empty);
  return h(
    "time",
    { datetime: utcText(d), title: `UTC: ${utcText(d)}` },
    LOCAL.format(d),
    rel ? h("span", { class: "rel" }, ` (${relative(d)})`) : null,
  );
}

/** "Europe/Chisinau" -> the local wall time there and its UTC offset at instant d. */
export function inZone(d, timeZone) {
  try {
    const fmt = new Intl.DateTimeFormat("en-GB", {
      timeZone,
      weekday: "short",
      year: d.getUTCFullYear() === new Date().getUTCFullYear() ? undefined : "numeric",
      month: "short",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      timeZoneName: "longOffset",
    });
    const parts = fmt.formatToParts(d);
    const offset = (parts.find((p) => p.type === "timeZoneName") || {}).value || "GMT";
    const text = parts
      .filter((p) => p.type !== "timeZoneName")
      .map((p) => p.value)
      .join("")
      .replace(/[\s,]+$/, "");
    return { text, offset: offset === "GMT" ? "UTC+00:00" : offset.replace("GMT", "UTC") };
  } catch {
    return { text: utcText(d), offset: "UTC+00:00" };
  }
}

export function viewerZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

export function duration(ms) {
  if (ms == null || Number.isNaN(Number(ms))) return "—";
  const v = Number(ms);
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60000) return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
  if (v < 3600000) return `${Math.floor(v / 60000)} min ${Math.round((v % 60000) / 1000)} s`;
  return `${Math.floor(v / 3600000)} h ${Math.round((v % 3600000) / 60000)} min`;
}

// ---- small pieces -------------------------------------------------------------------------------

export function badge(value, extra) {
  const v = value == null ? "none" : String(value);
  return h("span", { class: `badge s-${v.replace(/[^a-z_]/g, "")}` }, v.replace(/_/g, " "), extra ? ` · ${extra}` : null);
}

export function json(value) {
  let text;
  try {
    text = JSON.stringify(value, null, 2);
  } catch {
    text = String(value);
  }
  return h("pre", { class: "json" }, text === undefined ? "null" : text);
}

export function shortId(id) {
  return id ? String(id).slice(0, 8) : "—";
}

export function field(label, control, { hint, name } = {}) {
  const id = control.id || `f-${name || Math.random().toString(36).slice(2)}`;
  control.id = id;
  const err = h("p", { class: "field-error", id: `${id}-err`, hidden: true });
  const hintEl = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  control.setAttribute("aria-describedby", [hintEl && hintEl.id, err.id].filter(Boolean).join(" "));
  return h("div", { class: "field", "data-field": name || "" }, h("label", { for: id }, label), control, hintEl, err);
}

export function emptyState(title, text, action) {
  return h("div", { class: "empty" }, h("p", { class: "empty-title" }, title), text ? h("p", {}, text) : null, action);
}

export function errorBox(err, retry) {
  return h(
    "div",
    { class: "error-box", role: "alert" },
    h("strong", {}, errorTitle(err)),
    err && err.detail ? h("p", {}, err.detail) : null,
    retry ? h("button", { type: "button", onclick: retry }, "Try again") : null,
  );
}

export function errorTitle(err) {
  if (!err) return "Something went wrong";
  return err.title || err.message || "Something went wrong";
}
