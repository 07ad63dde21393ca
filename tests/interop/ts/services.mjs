// The interop scenarios written with the official TypeScript SDK (@restatedev/restate-sdk, pinned in
// tests/interop/package.json): twins of tests/interop/perdure_services.py (same names, same
// behaviour), so its drivers and EXPECTED apply. Plain ESM, no build step.
//
//   node tests/interop/ts/services.mjs [listen|http1] [PORT]      (PORT also from $PORT)
//
//   listen  HTTP/2 without TLS (h2c, prior knowledge) → BIDI_STREAM: the handler that
//           `endpoint().listen(port)` serves, bound to 127.0.0.1 (listen() binds every interface)
//   http1   `http1Handler()` on node:http → REQUEST_RESPONSE
//
// The SDK is loaded from .cache/node (where `dev.py setup` installs it), or $PERDURE_NODE_MODULES.
// $INACTIVITY_TIMEOUT_MS, if set, goes into every service's manifest entry (`inactivityTimeout`):
// how long the runtime keeps an idle bidirectional attempt open before it makes it suspend.

import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

// SDK 1.17 calls Promise.withResolvers (Node >= 22) once per invocation; on Node 20 it is missing
// and every invocation fails inside the SDK ("Unexpected error: TypeError"), its stream left open.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

const here = dirname(fileURLToPath(import.meta.url));
const nodeModules = process.env.PERDURE_NODE_MODULES ?? resolve(here, "../../../.cache/node/node_modules");
const sdkDir = join(nodeModules, "@restatedev", "restate-sdk");
const sdkEntry = JSON.parse(readFileSync(join(sdkDir, "package.json"), "utf8")).exports["."].import;
// a dynamic import, so the polyfill above is in place before any SDK module runs
const restate = await import(pathToFileURL(join(sdkDir, sdkEntry)).href);
const { handlers, object, rpc, service, workflow } = restate;

// ---- counter: an object, exclusive add / shared get

const counter = object({
  name: "Counter",
  handlers: {
    add: async (ctx, n) => {
      const total = ((await ctx.get("total")) ?? 0) + n;
      ctx.set("total", total);
      return total;
    },
    get: handlers.object.shared(async (ctx) => (await ctx.get("total")) ?? 0),
  },
});

// ---- a journey through run, sleep, state, a delayed send and a call

const greeter = service({
  name: "Greeter",
  handlers: {
    greet: async (ctx, name) => `hello ${name}`,
  },
});

const postbox = object({
  name: "Postbox",
  handlers: {
    post: async (ctx, letter) => {
      ctx.set("letters", [...((await ctx.get("letters")) ?? []), letter]);
    },
    letters: handlers.object.shared(async (ctx) => (await ctx.get("letters")) ?? []),
  },
});

const journey = object({
  name: "Journey",
  handlers: {
    travel: async (ctx, trip) => {
      const traveller = trip.traveller;
      const ticket = await ctx.run("book", () => `ticket-${traveller}`);
      await ctx.sleep(100);
      ctx.set("visited", trip.stops ?? 1);
      ctx
        .objectSendClient(postbox, ctx.key)
        .post(`postcard from ${traveller}`, rpc.sendOpts({ delay: 300 }));
      const greeting = await ctx.serviceClient(greeter).greet(traveller);
      const visited = await ctx.get("visited");
      return `${ticket}|${greeting}|${visited}`;
    },
  },
});

// ---- an awakeable completed over the ingress

const approvals = object({
  name: "Approvals",
  handlers: {
    request: async (ctx, what) => {
      const { id, promise } = ctx.awakeable();
      ctx.set("awakeable", id);
      const answer = await promise;
      return `${what}: ${answer}`;
    },
    pending: handlers.object.shared(async (ctx) => (await ctx.get("awakeable")) ?? null),
  },
});

// ---- a workflow: run waits on a promise that a shared handler resolves

const signup = workflow({
  name: "Signup",
  handlers: {
    run: async (ctx, email) => {
      ctx.set("status", "waiting for the link");
      const secret = await ctx.promise("link");
      ctx.set("status", "verified");
      return `${email} verified with ${secret}`;
    },
    click: async (ctx, secret) => {
      await ctx.promise("link").resolve(secret);
    },
    status: async (ctx) => (await ctx.get("status")) ?? null,
  },
});

const SERVICES = [counter, greeter, postbox, journey, approvals, signup];

// ---- serving

const mode = process.argv[2] ?? "listen";
const port = Number.parseInt(process.argv[3] ?? process.env.PORT ?? "9080", 10);
// endpoint() is deprecated in 1.17 for createEndpointHandler(), which picks the mode per request's
// HTTP version; endpoint() still names each flavour explicitly (listen's handler, http1Handler).
const endpoint = SERVICES.reduce((e, s) => e.bind(s), restate.endpoint());
if (process.env.INACTIVITY_TIMEOUT_MS) {
  endpoint.defaultServiceOptions({ inactivityTimeout: Number(process.env.INACTIVITY_TIMEOUT_MS) });
}

let server;
if (mode === "listen") {
  server = http2.createServer(endpoint.http2Handler());
} else if (mode === "http1") {
  server = http.createServer(endpoint.http1Handler());
} else {
  console.error(`unknown mode ${JSON.stringify(mode)}: listen or http1`);
  process.exit(2);
}
server.on("error", (e) => {
  console.error(`cannot serve on 127.0.0.1:${port}: ${e.message}`);
  process.exit(1);
});
server.listen(port, "127.0.0.1", () => console.log(`restate-sdk ${mode} on 127.0.0.1:${port}`));

