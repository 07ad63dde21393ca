// Small DOM helpers: element building, times, statuses, JSON.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const link = (href, ...children) => h("a", { href }, ...children);
export const invocationLink = (id) => h("a", { href: `#/invocations/${id}`, class: "mono" }, shortId(id));
export const shortId = (id) => (id && id.length > 16 ? `${id.slice(0, 10)}…${id.slice(-4)}` : id);

export function badge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

const pad = (n) => String(n).padStart(2, "0");

/** A time as the reader's local clock shows it; the RFC 3339 value in the tooltip. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const shown = today ? clock : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock}`;
  return h("time", { datetime: iso, title: iso }, shown);
}

/** "12 s ago", "in 4 min" */
export function relative(iso, now = Date.now()) {
  if (!iso) return "";
  const ms = new Date(iso).getTime() - now;
  const s = Math.round(Math.abs(ms) / 1000);
  const amount =
    s < 60 ? `${s} s` : s < 3600 ? `${Math.round(s / 60)} min` : s < 86400 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} d`;
  return ms >= 0 ? `in ${amount}` : `${amount} ago`;
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function table(headers, rows, props = {}) {
  return h(
    "table",
    props,
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", {}, name)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "muted" }, "none"))),
  );
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.status ? `${error.status}: ${error.message}` : String(error));
}

/** Ask before doing something that cannot be undone; resolves to true when confirmed. */
export function confirmDialog(message, action) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = message;
  document.getElementById("confirm-ok").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}
