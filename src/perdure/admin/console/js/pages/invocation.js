// One invocation: its header, controls, the journal as a timeline, input and output.
import { get, patch } from "../api.js";
import { badge, confirmDialog, errorBox, h, json, link, relative, replace, time } from "../dom.js";
import { poll } from "../poll.js";
import { timeline } from "../timeline.js";

// Which controls apply in which status (docs/admin.md: 409 otherwise), and what each does.
const CONTROLS = [
  ["cancel", (s) => s !== "completed", "Cancel: the handler sees a 409 'cancelled' TerminalError at its next await and may compensate; queued invocations end at once."],
  ["kill", (s) => s !== "completed", "Kill: stop it now; it completes with a 409 'killed' failure, without running any more code."],
  ["pause", (s) => ["running", "suspended", "backing-off"].includes(s), "Pause: no more attempts until resumed."],
  ["resume", (s) => s === "paused", "Resume: retry it now, its retry count starting over."],
  ["purge", (s) => s === "completed", "Purge: delete the invocation and its journal for good."],
];

export function mount(root, { match }) {
  const id = decodeURIComponent(match[1]);
  const header = h("div", { class: "panel" });
  const controls = h("div", { class: "controls" });
  const message = h("p", { class: "message", role: "status" });
  const journal = h("div", { class: "panel" });
  const io = h("div", { class: "io" });
  root.append(
    h("h1", {}, "Invocation ", h("span", { class: "mono", id: "invocation-id" }, id)),
    header,
    controls,
    message,
    h("section", {}, h("h2", {}, "Journal"), journal),
    io,
  );
  let status = null;

  async function refresh() {
    let inv;
    try {
      inv = await get(`/invocations/${encodeURIComponent(id)}`);
    } catch (error) {
      replace(header, errorBox(error));
      replace(controls);
      replace(journal);
      return;
    }
    if (inv.status !== status) drawControls(inv.status);
    status = inv.status;
    replace(header, describe(inv));
    replace(journal, timeline(inv));
    replace(io, inputOutput(inv));
  }

  function drawControls(current) {
    replace(
      controls,
      CONTROLS.map(([action, allowed, explanation]) =>
        h(
          "button",
          {
            type: "button",
            class: action === "resume" ? "" : "danger",
            disabled: !allowed(current),
            title: explanation,
            dataset: { action },
            onclick: () => control(action, explanation),
          },
          action[0].toUpperCase() + action.slice(1),
        ),
      ),
    );
  }

  async function control(action, explanation) {
    if (!(await confirmDialog(`${explanation}\n\n${action} ${id}?`, action[0].toUpperCase() + action.slice(1)))) return;
    try {
      await patch(`/invocations/${encodeURIComponent(id)}/${action}`);
      message.className = "message ok";
      message.textContent = action === "cancel" ? "Cancel requested (202): the handler sees it at its next await." : `${action}: done.`;
      if (action === "purge") {
        window.location.hash = "#/invocations";
        return;
      }
    } catch (error) {
      message.className = "message error";
      message.textContent = `${action} refused — ${error.status}: ${error.message}`;
    }
    status = null;
    await refresh();
  }

  return poll(async () => {
    if (status !== "completed") await refresh();
  }, 2000);
}

function row(label, ...value) {
  return [h("dt", {}, label), h("dd", {}, ...value)];
}

function describe(inv) {
  const keyLink = inv.key !== null
    ? link(`#/state?service=${encodeURIComponent(inv.service)}&key=${encodeURIComponent(inv.key)}`, inv.key)
    : h("span", { class: "muted" }, "— (a service)");
  const failure = inv.completion_failure || inv.last_failure;
  return h(
    "dl",
    { class: "facts" },
    row("target", h("span", { class: "mono" }, inv.target)),
    row("status", badge(inv.status), inv.completion_failure ? h("span", { class: "badge status-failed" }, "failed") : ""),
    row("key", keyLink),
    row("attempts", String(inv.attempts)),
    inv.next_retry_at ? row("next retry", time(inv.next_retry_at), ` (${relative(inv.next_retry_at)})`) : [],
    inv.scheduled_at ? row("scheduled for", time(inv.scheduled_at), ` (${relative(inv.scheduled_at)})`) : [],
    row("created", time(inv.created_at), ` (${relative(inv.created_at)})`),
    row("modified", time(inv.modified_at)),
    inv.completed_at ? row("completed", time(inv.completed_at)) : [],
    row("deployment", inv.pinned_deployment_id ? h("span", { class: "mono" }, inv.pinned_deployment_id) : "in-process",
      inv.pinned_protocol_version ? ` · protocol v${inv.pinned_protocol_version}` : ""),
    inv.idempotency_key ? row("idempotency key", h("span", { class: "mono" }, inv.idempotency_key)) : [],
    failure ? row(inv.completion_failure ? "failure" : "last failure", h("span", { class: "failure" }, `${failure.code} ${failure.message}`)) : [],
  );
}

function inputOutput(inv) {
  const input = inv.journal.find((e) => e.type === "InputCommand");
  const outcome = inv.outcome;
  let output = h("p", { class: "muted" }, "not finished yet");
  if (outcome && "value" in outcome) output = json(outcome.value);
  else if (outcome && outcome.value_base64) output = h("pre", { class: "json" }, `base64: ${outcome.value_base64}`);
  else if (outcome && outcome.failure) output = h("p", { class: "failure" }, `${outcome.failure.code} ${outcome.failure.message}`);
  return [
    h("section", {}, h("h2", {}, "Input"), input ? (input.value_base64 ? h("pre", { class: "json" }, `base64: ${input.value_base64}`) : json(input.value)) : ""),
    h("section", {}, h("h2", {}, "Output"), output),
  ];
}

