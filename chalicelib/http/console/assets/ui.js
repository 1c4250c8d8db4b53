// Toasts, confirmation dialogs and navigation, shared by every view.

import { h } from "./dom.js";

export function notify(text, kind = "ok") {
  const box = document.getElementById("toasts");
  const t = h("div", { class: `toast ${kind}` }, text);
  box.append(t);
  setTimeout(() => t.remove(), kind === "error" ? 8000 : 4000);
}

/** A modal confirmation. `fields` are extra controls (e.g. a snooze reason); resolves to a
 * FormData-like object, or null when cancelled (Escape, the Cancel button). */
export function confirmDialog({ title, text, confirm = "Confirm", danger = false, fields = [], cancel = true }) {
  return new Promise((resolve) => {
    const form = h(
      "form",
      { method: "dialog", class: "dialog-body" },
      h("h2", {}, title),
      text ? h("p", {}, text) : null,
      fields,
      h(
        "div",
        { class: "buttons" },
        cancel ? h("button", { type: "button", class: "ghost", onclick: () => dlg.close("cancel") }, "Cancel") : null,
        h("button", { type: "submit", class: danger ? "danger" : "primary", value: "ok" }, confirm),
      ),
    );
    const dlg = h("dialog", { "aria-label": title }, form);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!form.reportValidity()) return;
      const values = Object.fromEntries(new FormData(form).entries());
      dlg.close("ok");
      resolve(values);
    });
    dlg.addEventListener("close", () => {
      dlg.remove();
      if (dlg.returnValue !== "ok") resolve(null);
    });
    document.body.append(dlg);
    dlg.showModal();
    const first = form.querySelector("input, textarea, select");
    (first || form.querySelector("button[type=submit]")).focus();
  });
}

export function navigate(hash) {
  if (location.hash === hash) window.dispatchEvent(new Event("console:reroute"));
  else location.hash = hash;
}
