// The console: a hash router over page modules. Each page's `mount(root, route)` draws into
// `root` and returns a function that stops whatever it started (polling).
import { get } from "./api.js";
import { errorBox, replace } from "./dom.js";
import { poll } from "./poll.js";
import * as deployments from "./pages/deployments.js";
import * as invocation from "./pages/invocation.js";
import * as invocations from "./pages/invocations.js";
import * as kafka from "./pages/kafka.js";
import * as overview from "./pages/overview.js";
import * as state from "./pages/state.js";

const routes = [
  [/^\/$/, overview, "overview"],
  [/^\/invocations$/, invocations, "invocations"],
  [/^\/invocations\/([^/]+)$/, invocation, "invocations"],
  [/^\/state$/, state, "state"],
  [/^\/kafka$/, kafka, "kafka"],
  [/^\/deployments$/, deployments, "deployments"],
];

let stop = () => {};

function route() {
  const [path, query] = (window.location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  stop();
  stop = () => {};
  const root = document.getElementById("page");
  for (const [pattern, page, nav] of routes) {
    const match = path.match(pattern);
    if (!match) continue;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === nav);
    replace(root);
    try {
      stop = page.mount(root, { match, params }) || (() => {});
    } catch (error) {
      replace(root, errorBox(error));
    }
    return;
  }
  replace(root, errorBox(`no page ${path}`));
}

function health() {
  const el = document.getElementById("health");
  return poll(async () => {
    try {
      await get("/health");
      el.textContent = "healthy";
      el.className = "health ok";
    } catch (error) {
      el.textContent = error.status ? `unhealthy: ${error.message}` : "admin API unreachable";
      el.className = "health bad";
    }
  }, 5000);
}

window.addEventListener("hashchange", route);
route();
health();
