// The journal as a timeline: one row per command, with the notification that completed it
// (paired by completion id) folded in; notifications that complete nothing shown on their own.
import { h, invocationLink, json, relative, time } from "./dom.js";

const VERB = {
  InputCommand: "input",
  OutputCommand: "output",
  RunCommand: "ctx.run",
  SleepCommand: "sleep",
  CallCommand: "call",
  OneWayCallCommand: "send",
  GetLazyStateCommand: "get state",
  GetEagerStateCommand: "get state",
  SetStateCommand: "set state",
  ClearStateCommand: "clear state",
  ClearAllStateCommand: "clear all state",
  GetLazyStateKeysCommand: "state keys",
  GetEagerStateKeysCommand: "state keys",
  GetPromiseCommand: "await promise",
  PeekPromiseCommand: "peek promise",
  CompletePromiseCommand: "complete promise",
  SendSignalCommand: "send signal",
  SignalNotification: "signal",
  AttachInvocationCommand: "attach",
  GetInvocationOutputCommand: "get output",
  CompleteAwakeableCommand: "complete awakeable",
};

export function timeline(inv) {
  const entries = inv.journal;
  const completions = new Map();
  for (const e of entries) {
    if (e.type.endsWith("Notification") && e.type !== "CallInvocationIdCompletionNotification" && e.completion_id !== undefined) {
      completions.set(e.completion_id, e);
    }
  }
  const folded = new Set();
  const items = [];
  for (const e of entries) {
    if (e.type.endsWith("Notification")) {
      if (e.type === "CallInvocationIdCompletionNotification") continue; // shown on its call
      if (folded.has(e.index)) continue;
    }
    const done = !e.type.endsWith("Notification") && e.completion_id !== undefined ? completions.get(e.completion_id) : undefined;
    if (done) folded.add(done.index);
    items.push(item(e, done, inv));
  }
  const waiting = inv.status === "suspended" || inv.status === "running" || inv.status === "backing-off";
  if (inv.status !== "completed") {
    const failure = inv.last_failure;
    items.push(
      h(
        "li",
        { class: `entry now ${failure ? "failed" : ""}` },
        h("span", { class: "marker" }),
        h("span", { class: "what" }, waiting ? (failure ? "attempt failed" : "now") : inv.status),
        h(
          "span",
          { class: "detail" },
          failure ? h("span", { class: "failure" }, `${failure.code} ${failure.message}`) : "",
          inv.next_retry_at ? ` · next retry ${relative(inv.next_retry_at)}` : "",
          inv.status === "suspended" ? " · suspended: nothing in memory until a completion arrives" : "",
        ),
      ),
    );
  }
  return h("ol", { class: "timeline", dataset: { entries: entries.length } }, items);
}

function item(e, done, inv) {
  const verb = VERB[e.type] || e.type;
  const pending = e.completion_id !== undefined && !e.type.endsWith("Notification") && !done;
  const failure = (done && done.failure) || e.failure;
  const classes = ["entry", e.type.endsWith("Notification") ? "notification" : "command", pending ? "pending" : "", failure ? "failed" : ""];
  return h(
    "li",
    { class: classes.join(" "), dataset: { type: e.type, index: e.index } },
    h("span", { class: "marker" }),
    h("span", { class: "index" }, `#${e.index}${done ? `–${done.index}` : ""}`),
    h("span", { class: "what" }, verb, e.name ? h("b", {}, ` "${e.name}"`) : ""),
    h("span", { class: "detail" }, detail(e, done, pending, inv)),
    h("details", {}, h("summary", {}, "raw"), h("code", {}, e.summary), done ? h("code", {}, done.summary) : ""),
  );
}

function detail(e, done, pending, inv) {
  const parts = [];
  if (e.type === "SleepCommand") {
    const due = e.wake_up_time;
    const wake = done ? " · woke" : inv.status === "completed" ? "" : h("span", { class: "wake" }, ` · wakes ${relative(due)}`);
    parts.push("until ", time(due), wake);
  }
  if (e.signal !== undefined) parts.push(e.signal === 1 ? h("b", {}, "cancellation ") : `signal ${e.signal} `);
  if (e.key !== undefined) parts.push(h("span", { class: "mono state-key" }, e.key), " ");
  if (e.target) parts.push(h("span", { class: "mono" }, e.target), " ");
  if (e.invocation_id) parts.push("→ ", invocationLink(e.invocation_id), " ");
  if (e.invoke_time) parts.push("at ", time(e.invoke_time), " ");
  if (e.type === "InputCommand" && e.headers && e.headers["kafka.topic"]) {
    const k = e.headers;
    parts.push(`from Kafka ${k["kafka.topic"]}/${k["kafka.partition"]}/${k["kafka.offset"]} `);
  }
  const shown = done || e;
  if (e.type !== "InputCommand" && (shown.value !== null || shown.value_base64)) {
    parts.push(shown.value_base64 ? `base64 ${shown.value_base64}` : [e.key !== undefined ? "= " : "", compact(shown.value)]);
  }
  const failure = (done && done.failure) || e.failure;
  if (failure) parts.push(h("span", { class: "failure" }, `${failure.code} ${failure.message}`));
  if (pending) parts.push(h("span", { class: "muted" }, inv.status === "completed" ? " (no result)" : " waiting…"));
  return parts;
}

function compact(value) {
  const text = JSON.stringify(value);
  return text.length > 120 ? h("details", { class: "inline" }, h("summary", {}, `${text.slice(0, 100)}…`), json(value)) : h("code", {}, text);
}
