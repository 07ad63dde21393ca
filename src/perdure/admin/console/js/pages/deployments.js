// Deployments: the engine's own (in-process) services, and the registered remote deployments with
// their services, revisions and protocol versions.
import { get } from "../api.js";
import { errorBox, h, replace, table, time } from "../dom.js";

export function mount(root) {
  const body = h("div", {});
  root.append(h("h1", {}, "Deployments"), body);
  Promise.all([get("/deployments"), get("/services")])
    .then(([d, s]) => {
      const inProcess = s.services.filter((x) => x.deployment_id === "in-process");
      const revisions = new Map(s.services.map((x) => [x.name, x]));
      replace(
        body,
        h(
          "section",
          { class: "panel" },
          h("h2", {}, "in-process"),
          h("p", { class: "muted" }, "The app perdure was started with: handlers run in this process, no network hop."),
          services(inProcess),
        ),
        d.deployments.length ? "" : h("p", { class: "muted" }, "No remote deployments: perdure deployments register URI (docs/deployments.md)."),
        d.deployments.map((dep) =>
          h(
            "section",
            { class: "panel", dataset: { deployment: dep.id } },
            h("h2", { class: "mono" }, dep.id),
            h(
              "dl",
              { class: "facts" },
              h("dt", {}, "uri"), h("dd", { class: "mono" }, dep.uri),
              h("dt", {}, "protocol"), h("dd", {}, `${dep.protocol_type} over ${dep.http_version}`),
              h("dt", {}, "protocol versions"), h("dd", {}, `v${dep.min_protocol_version}–v${dep.max_protocol_version}, using v${dep.protocol_version}`),
              h("dt", {}, "registered"), h("dd", {}, time(new Date(dep.created_at).toISOString())),
            ),
            services(dep.services.map((x) => revisions.get(x.name) || x)),
          ),
        ),
      );
    })
    .catch((error) => replace(body, errorBox(error)));
  return () => {};
}

function services(list) {
  return table(
    ["service", "type", "revision", "handlers"],
    list.map((s) =>
      h(
        "tr",
        {},
        h("td", {}, h("a", { href: `#/invocations?service=${encodeURIComponent(s.name)}` }, s.name)),
        h("td", {}, s.ty || ""),
        h("td", { class: "num" }, s.revision),
        h("td", {}, (s.handlers || []).map((x) => h("span", { class: "chip" }, x.name))),
      ),
    ),
  );
}
