// State: pick a virtual object (or workflow) and a key → its K/V state, the invocation holding
// the key and the invocations queued behind it, in the order they will run.
import { get } from "../api.js";
import { badge, errorBox, h, invocationLink, json, relative, replace, table, time } from "../dom.js";
import { poll } from "../poll.js";

export function mount(root, { params }) {
  const form = h("form", { class: "filters", autocomplete: "off" });
  const keys = h("div", { class: "panel" });
  const detail = h("div", {});
  root.append(h("h1", {}, "State"), form, detail, h("section", {}, h("h2", {}, "Keys"), keys));
  const service = params.get("service") || "";
  const key = params.get("key");

  get("/services")
    .then(({ services }) => {
      const keyed = services.filter((s) => s.ty !== "Service");
      const chosen = service || (keyed[0] && keyed[0].name) || "";
      const select = h(
        "select",
        { name: "service", id: "state-service" },
        keyed.map((s) => h("option", { value: s.name, selected: s.name === chosen }, `${s.name} (${s.ty})`)),
      );
      const input = h("input", { name: "key", id: "state-key", placeholder: "key", value: key || "", list: "state-keys" });
      const options = h("datalist", { id: "state-keys" });
      input.addEventListener("input", async () => {
        const found = await get(`/services/${encodeURIComponent(select.value)}/keys`, { prefix: input.value, limit: 20 });
        replace(options, found.keys.map((k) => h("option", { value: k.key })));
      });
      select.addEventListener("change", () => go(select.value, ""));
      form.append(select, input, options, h("button", { type: "submit" }, "Show"));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        go(select.value, input.value);
      });
      if (!keyed.length) replace(detail, h("p", { class: "muted" }, "No virtual objects or workflows: services have no keys."));
      else if (!service) go(chosen, key || "");
    })
    .catch((error) => replace(form, errorBox(error)));

  if (!service) return () => {};
  return poll(async () => {
    try {
      const listed = await get(`/services/${encodeURIComponent(service)}/keys`, { limit: 200 });
      replace(keys, keyTable(service, listed));
      if (key !== null && key !== "") {
        replace(detail, describe(await get(`/services/${encodeURIComponent(service)}/keys/${encodeURIComponent(key)}`)));
      }
    } catch (error) {
      replace(keys, errorBox(error));
    }
  }, 3000);
}

function go(service, key) {
  const query = new URLSearchParams({ service });
  if (key) query.set("key", key);
  window.location.hash = `#/state?${query}`;
}

function keyTable(service, listed) {
  const rows = listed.keys.map((k) =>
    h(
      "tr",
      { dataset: { key: k.key }, class: k.queued ? "blocked" : "" },
      h("td", {}, h("a", { href: `#/state?service=${encodeURIComponent(service)}&key=${encodeURIComponent(k.key)}` }, k.key)),
      h("td", { class: "num" }, k.state_entries),
      h("td", {}, k.locked_by ? invocationLink(k.locked_by) : ""),
      h("td", { class: "num" }, k.queued || ""),
    ),
  );
  return [
    table(["key", "state entries", "held by", "queued"], rows, { class: "keys" }),
    listed.truncated ? h("p", { class: "muted" }, "More keys: type a prefix above.") : "",
  ];
}

function describe(k) {
  const holder = k.locked_by;
  return h(
    "div",
    { class: "key-detail", dataset: { key: k.key } },
    h("h2", {}, `${k.service} / `, h("span", { class: "mono" }, k.key)),
    h(
      "div",
      { class: "columns" },
      h(
        "section",
        { class: "panel" },
        h("h3", {}, "State"),
        Object.keys(k.state).length
          ? h("dl", { class: "state" }, Object.entries(k.state).flatMap(([name, value]) => [h("dt", { class: "mono" }, name), h("dd", {}, json(value))]))
          : h("p", { class: "muted" }, "no state"),
      ),
      h(
        "section",
        { class: "panel" },
        h("h3", {}, "Running now"),
        holder
          ? h("p", { class: "holder" }, invocationLink(holder.id), " ", badge(holder.status), ` ${holder.handler} · since `, time(holder.created_at), ` (${relative(holder.created_at)})`)
          : h("p", { class: "muted" }, "nothing holds this key"),
        h("h3", {}, `Queue (${k.queued})`),
        table(
          ["#", "invocation", "handler", "status", "created"],
          k.inbox.map((inv, i) =>
            h("tr", { dataset: { id: inv.id } }, h("td", { class: "num" }, i + 1), h("td", {}, invocationLink(inv.id)), h("td", {}, inv.handler), h("td", {}, badge(inv.status)), h("td", {}, time(inv.created_at))),
          ),
          { class: "inbox" },
        ),
        k.queued > k.inbox.length ? h("p", { class: "muted" }, `and ${k.queued - k.inbox.length} more`) : "",
      ),
    ),
  );
}
