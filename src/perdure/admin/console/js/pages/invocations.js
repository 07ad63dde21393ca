// Invocations: a filterable, paged list, newest first, live while on the first page.
// The filters live in the URL (#/invocations?status=suspended&service=…), so a view can be shared.
import { get } from "../api.js";
import { badge, errorBox, h, invocationLink, relative, replace, table, time } from "../dom.js";
import { poll } from "../poll.js";

const STATUSES = ["", "pending", "scheduled", "running", "suspended", "backing-off", "paused", "completed", "parked"];
// Age choices → created_after / created_before, relative to now.
const AGES = {
  "": ["any age", null, null],
  "1m": ["< 1 minute", 60, null],
  "15m": ["< 15 minutes", 900, null],
  "1h": ["< 1 hour", 3600, null],
  "1d": ["< 1 day", 86400, null],
  "old1h": ["> 1 hour", null, 3600],
  "old1d": ["> 1 day", null, 86400],
};
const FIELDS = ["q", "service", "handler", "key", "status", "deployment", "age", "error"];

export function mount(root, { params }) {
  const form = h("form", { class: "filters", autocomplete: "off" });
  const list = h("div", { class: "panel" });
  const pager = h("div", { class: "pager" });
  const live = h("input", { type: "checkbox", checked: true, id: "live" });
  root.append(
    h("h1", {}, "Invocations"),
    form,
    h("p", { class: "toolbar" }, h("label", {}, live, " live"), pager),
    list,
  );
  const cursors = [null]; // cursors[i]: the cursor of page i (null: the first page)
  let page = 0;

  buildForm(form, params).then(() => {});
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const name of FIELDS) {
      const value = form.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    window.location.hash = `#/invocations${query.toString() ? `?${query}` : ""}`;
  });

  async function refresh() {
    const query = { order: "desc", limit: 25, cursor: cursors[page] };
    for (const name of ["q", "service", "handler", "key", "status", "deployment", "error"]) query[name] = params.get(name);
    const [, after, before] = AGES[params.get("age") || ""] || AGES[""];
    const now = Date.now();
    if (after) query.created_after = new Date(now - after * 1000).toISOString();
    if (before) query.created_before = new Date(now - before * 1000).toISOString();
    try {
      const answer = await get("/invocations", query);
      cursors[page + 1] = answer.next_cursor;
      replace(list, invocationTable(answer.invocations));
      replace(
        pager,
        h("button", { type: "button", disabled: page === 0, onclick: () => go(page - 1) }, "← Newer"),
        h("span", { class: "muted" }, ` page ${page + 1} `),
        h("button", { type: "button", disabled: !answer.next_cursor, onclick: () => go(page + 1) }, "Older →"),
      );
    } catch (error) {
      replace(list, errorBox(error));
    }
  }

  function go(next) {
    page = next;
    live.checked = page === 0;
    refresh();
  }

  return poll(async () => {
    if (live.checked || !list.firstChild) await refresh();
  }, 2000);
}

async function buildForm(form, params) {
  const value = (name) => params.get(name) || "";
  let services = [];
  let deployments = [];
  try {
    [services, deployments] = await Promise.all([
      get("/services").then((a) => a.services),
      get("/deployments").then((a) => a.deployments),
    ]);
  } catch (error) {
    form.append(errorBox(error));
  }
  const select = (name, options) =>
    h(
      "select",
      { name, id: `filter-${name}` },
      options.map(([v, label]) => h("option", { value: v, selected: v === value(name) }, label)),
    );
  const input = (name, placeholder, size = 14) =>
    h("input", { name, id: `filter-${name}`, placeholder, value: value(name), size });
  const handlers = new Set(services.flatMap((s) => s.handlers.map((x) => x.name)));
  form.append(
    input("q", "search id or idempotency key", 28),
    select("service", [["", "any service"], ...services.map((s) => [s.name, s.name])]),
    h(
      "input",
      { name: "handler", id: "filter-handler", placeholder: "handler", value: value("handler"), size: 14, list: "handlers" },
    ),
    h("datalist", { id: "handlers" }, [...handlers].map((name) => h("option", { value: name }))),
    input("key", "key", 10),
    select("status", STATUSES.map((s) => [s, s || "any status"])),
    select("deployment", [["", "any deployment"], ["in-process", "in-process"], ...deployments.map((d) => [d.id, d.id])]),
    select("age", Object.entries(AGES).map(([k, [label]]) => [k, label])),
    input("error", "error text", 14),
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: "#/invocations", class: "button" }, "Clear"),
  );
}

function invocationTable(invocations) {
  return table(
    ["id", "target", "status", "attempts", "created", "modified", "deployment", "failure"],
    invocations.map((inv) =>
      h(
        "tr",
        { dataset: { id: inv.id, status: inv.status } },
        h("td", {}, invocationLink(inv.id)),
        h("td", { class: "mono" }, inv.target),
        h("td", {}, badge(inv.status), inv.completion_failure ? badge("failed") : "", inv.status === "backing-off" ? h("small", {}, ` retry ${relative(inv.next_retry_at)}`) : ""),
        h("td", { class: "num" }, inv.attempts),
        h("td", {}, time(inv.created_at), h("small", { class: "muted" }, ` ${relative(inv.created_at)}`)),
        h("td", {}, time(inv.modified_at)),
        h("td", { class: "mono" }, inv.deployment_id || ""),
        h(
          "td",
          { class: "failure" },
          failureText(inv.completion_failure || inv.last_failure),
        ),
      ),
    ),
    { class: "invocations" },
  );
}

function failureText(failure) {
  return failure ? `${failure.code} ${failure.message}` : "";
}
