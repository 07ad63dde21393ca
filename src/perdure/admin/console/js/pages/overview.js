// Overview: services and handlers, invocations by status, activity over the last 15 minutes,
// subscriptions with their lag.
import { get } from "../api.js";
import { activityChart } from "../chart.js";
import { badge, errorBox, h, link, replace, table } from "../dom.js";
import { poll } from "../poll.js";

const STATUSES = ["pending", "scheduled", "running", "suspended", "backing-off", "paused", "completed", "parked"];

export function mount(root) {
  const counts = h("div", { class: "tiles" });
  const chart = h("div", { class: "panel" });
  const services = h("div", { class: "panel" });
  const subscriptions = h("div", { class: "panel" });
  root.append(
    h("h1", {}, "Overview"),
    counts,
    h("section", {}, h("h2", {}, "Last 15 minutes"), chart),
    h("section", {}, h("h2", {}, "Kafka subscriptions"), subscriptions),
    h("section", {}, h("h2", {}, "Services"), services),
  );
  return poll(async () => {
    try {
      const [activity, svc, subs] = await Promise.all([get("/activity"), get("/services"), get("/subscriptions")]);
      replace(
        counts,
        STATUSES.map((status) =>
          h(
            "a",
            { class: "tile", href: `#/invocations?status=${status}`, dataset: { status } },
            h("span", { class: "count" }, activity.counts[status].toLocaleString()),
            badge(status),
          ),
        ),
      );
      const totals = activity.buckets.reduce(
        (t, b) => ({ created: t.created + b.created, completed: t.completed + b.completed, failed: t.failed + b.failed }),
        { created: 0, completed: 0, failed: 0 },
      );
      replace(
        chart,
        activityChart(activity.buckets, activity.bucket_seconds),
        h(
          "p",
          { class: "legend" },
          h("span", { class: "key created" }, `${totals.created} created`),
          h("span", { class: "key ok" }, `${totals.completed - totals.failed} succeeded`),
          h("span", { class: "key failed" }, `${totals.failed} failed`),
          h("span", { class: "muted" }, ` · per ${activity.bucket_seconds} s`),
        ),
      );
      replace(subscriptions, subscriptionTable(subs.subscriptions));
      replace(services, serviceTable(svc.services));
    } catch (error) {
      replace(counts, errorBox(error));
    }
  }, 3000);
}

function subscriptionTable(subs) {
  return table(
    ["subscription", "source → sink", "status", "records", "lag"],
    subs.map((s) => {
      const lag = s.partitions.reduce((sum, p) => sum + (p.lag || 0), 0);
      return h(
        "tr",
        { dataset: { subscription: s.id } },
        h("td", {}, link("#/kafka", s.id)),
        h("td", {}, `${s.source} → ${s.sink}`),
        h("td", {}, badge(s.status)),
        h("td", { class: "num" }, s.records.toLocaleString()),
        h("td", { class: "num", dataset: { lag } }, s.partitions.length ? lag.toLocaleString() : "—"),
      );
    }),
  );
}

function serviceTable(services) {
  return table(
    ["service", "type", "deployment", "handlers"],
    services.map((s) =>
      h(
        "tr",
        {},
        h("td", {}, link(`#/invocations?service=${encodeURIComponent(s.name)}`, s.name)),
        h("td", {}, s.ty),
        h("td", { class: "mono" }, s.deployment_id),
        h(
          "td",
          {},
          s.handlers.map((handler) =>
            h(
              "span",
              { class: "chip", title: handler.documentation || "" },
              handler.name,
              handler.ty ? h("small", {}, ` ${handler.ty.toLowerCase()}`) : "",
            ),
          ),
        ),
      ),
    ),
  );
}
