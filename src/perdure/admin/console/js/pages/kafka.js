// Kafka: clusters, subscriptions with per-partition offsets and lag, records per second (from the
// change of `records` between two polls), and the records whose invocation failed.
import { get } from "../api.js";
import { badge, errorBox, h, invocationLink, replace, table } from "../dom.js";
import { poll } from "../poll.js";

export function mount(root) {
  const clusters = h("div", { class: "panel" });
  const subscriptions = h("div", {});
  root.append(h("h1", {}, "Kafka"), h("section", {}, h("h2", {}, "Clusters"), clusters), subscriptions);
  const previous = new Map(); // subscription id → [records, time]

  return poll(async () => {
    try {
      const [c, s] = await Promise.all([get("/kafka-clusters"), get("/subscriptions")]);
      replace(
        clusters,
        table(
          ["cluster", "bootstrap.servers", "properties"],
          c.clusters.map((cl) =>
            h("tr", {}, h("td", {}, cl.name), h("td", { class: "mono" }, cl.properties["bootstrap.servers"]), h("td", { class: "mono small" }, Object.entries(cl.properties).filter(([k]) => k !== "bootstrap.servers").map(([k, v]) => `${k}=${v}`).join(" "))),
          ),
        ),
      );
      const failures = await Promise.all(s.subscriptions.map((sub) => get(`/subscriptions/${sub.id}/failures`, { limit: 20 })));
      const now = performance.now();
      replace(
        subscriptions,
        s.subscriptions.length ? "" : h("p", { class: "muted" }, "No subscriptions: POST /subscriptions (docs/kafka.md)."),
        s.subscriptions.map((sub, i) => {
          const last = previous.get(sub.id);
          const rate = last && now > last[1] ? ((sub.records - last[0]) * 1000) / (now - last[1]) : null;
          previous.set(sub.id, [sub.records, now]);
          return subscription(sub, rate, failures[i].failures);
        }),
      );
    } catch (error) {
      replace(subscriptions, errorBox(error));
    }
  }, 2000);
}

function subscription(sub, rate, failures) {
  const lag = sub.partitions.reduce((sum, p) => sum + (p.lag || 0), 0);
  return h(
    "section",
    { class: "panel subscription", dataset: { subscription: sub.id } },
    h("h2", {}, h("span", { class: "mono" }, sub.id), " ", badge(sub.status)),
    h("p", {}, h("span", { class: "mono" }, sub.source), " → ", h("span", { class: "mono" }, sub.sink)),
    sub.error ? h("p", { class: "error" }, sub.error) : "",
    h(
      "dl",
      { class: "facts inline" },
      h("dt", {}, "records accepted"),
      h("dd", { class: "records" }, sub.records.toLocaleString()),
      h("dt", {}, "records/s"),
      h("dd", { class: "rate" }, rate === null ? "…" : rate.toFixed(1)),
      h("dt", {}, "total lag"),
      h("dd", { class: "lag", dataset: { lag } }, sub.partitions.length ? lag.toLocaleString() : "—"),
    ),
    table(
      ["topic", "partition", "committed offset", "end offset", "lag", "in flight", "oldest pending", "paused"],
      sub.partitions.map((p) =>
        h(
          "tr",
          { dataset: { partition: p.partition, lag: p.lag ?? "" } },
          h("td", {}, p.topic),
          h("td", { class: "num" }, p.partition),
          h("td", { class: "num" }, p.consumed_offset ?? "—"),
          h("td", { class: "num" }, p.high_watermark ?? "—"),
          h("td", { class: "num lag" }, p.lag ?? "—"),
          h("td", { class: "num" }, p.in_flight),
          h("td", { class: "num" }, p.oldest_pending_ms === null ? "" : `${(p.oldest_pending_ms / 1000).toFixed(1)} s`),
          h("td", {}, p.paused ? "paused" : ""),
        ),
      ),
      { class: "partitions" },
    ),
    h("h3", {}, `Failed records (${failures.length}${failures.length === 20 ? "+" : ""})`),
    table(
      ["topic", "partition", "offset", "key", "failure", "invocation"],
      failures.map((f) =>
        h(
          "tr",
          { dataset: { offset: f.offset } },
          h("td", {}, f.topic),
          h("td", { class: "num" }, f.partition),
          h("td", { class: "num" }, f.offset),
          h("td", { class: "mono" }, f.key ?? ""),
          h("td", { class: "failure" }, f.failure ? `${f.failure.code} ${f.failure.message}` : ""),
          h("td", {}, invocationLink(f.invocation.id)),
        ),
      ),
      { class: "failures" },
    ),
  );
}
