// Calls portico's gRPC-Web bridge with real clients nobody here wrote and
// prints one JSON line per (client, case) with what the client observed;
// controller/tests/grpc_web_clients.rs judges the lines.
//
//   node client.mjs --base URL --down URL --origin ORIGIN [--client C]... [--case C]...
//
// --base: where portico.test.Echo is served through the bridge.
// --down: the same service path on a route whose backend is not listening.
// --origin: an origin the route allows (for the CORS preflight cases).
// Clients: connect-h1, connect-h2 (connect-node's gRPC-Web transport over
// HTTP/1.1 and h2c with prior knowledge), protobuf-ts-text and
// protobuf-ts-binary (protobuf-ts's fetch transport); the CORS cases run
// once with Node's fetch, as client "fetch".
//
// Observations, not verdicts: a line has `code` (0 for OK, else the gRPC
// status the client reported, or null when it failed some other way with
// `error`), `message`, `replies` (message, index, payload_len), `headers`
// (response metadata the client exposed) and, for streams, `arrivals_ms`
// and `end_ms`, milliseconds since the call started.

import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";

import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { GrpcStatusCode, GrpcWebFetchTransport } from "@protobuf-ts/grpcweb-transport";
import { RpcError } from "@protobuf-ts/runtime-rpc";

// The generated code is CommonJS (see buf.gen.yaml).
const require = createRequire(import.meta.url);
const es = require("./gen/es/portico/test/echo_pb.js");
const pbts = {
  ...require("./gen/protobuf-ts/portico/test/echo.js"),
  ...require("./gen/protobuf-ts/portico/test/echo.client.js"),
};

const CASE_TIMEOUT_MS = 20_000;
const MIB = 1024 * 1024;

const { values: args } = parseArgs({
  options: {
    base: { type: "string" },
    down: { type: "string" },
    origin: { type: "string" },
    client: { type: "string", multiple: true },
    case: { type: "string", multiple: true },
  },
});
if (!args.base || !args.down || !args.origin) {
  console.error("usage: node client.mjs --base URL --down URL --origin ORIGIN [--client C]... [--case C]...");
  process.exit(2);
}

// === clients ===
//
// Each adapter turns one library's API into the same two calls.

function connectClient(baseUrl, httpVersion) {
  const client = createClient(es.Echo, createGrpcWebTransport({ baseUrl, httpVersion }));
  const opts = (o, headers) => ({
    signal: o.signal,
    timeoutMs: o.timeoutMs,
    onHeader: (h) => h.forEach((v, k) => (headers[k] = v)),
    onTrailer: (h) => h.forEach((v, k) => (headers[k] = v)),
  });
  return {
    async unary(req, o = {}) {
      const headers = {};
      const reply = await client.unary(create(es.EchoRequestSchema, req), opts(o, headers));
      return { reply, headers };
    },
    async *serverStream(req, o = {}) {
      yield* client.serverStream(create(es.EchoRequestSchema, req), opts(o, {}));
    },
  };
}

function protobufTsClient(baseUrl, format) {
  const client = new pbts.EchoClient(new GrpcWebFetchTransport({ baseUrl, format }));
  const opts = (o) => ({ abort: o.signal, timeout: o.timeoutMs });
  return {
    async unary(req, o = {}) {
      const call = client.unary(pbts.EchoRequest.create(req), opts(o));
      const [reply, headers] = await Promise.all([call.response, call.headers]);
      return { reply, headers };
    },
    async *serverStream(req, o = {}) {
      const call = client.serverStream(pbts.EchoRequest.create(req), opts(o));
      yield* call.responses;
      await call.status;
    },
  };
}

const CLIENTS = {
  "connect-h1": (base) => connectClient(base, "1.1"),
  "connect-h2": (base) => connectClient(base, "2"),
  "protobuf-ts-text": (base) => protobufTsClient(base, "text"),
  "protobuf-ts-binary": (base) => protobufTsClient(base, "binary"),
};

// === observations ===

function summary(r) {
  return { message: r.message, index: r.index, payload_len: r.payload.length };
}

function failure(err) {
  if (err instanceof ConnectError) {
    return { code: err.code, message: err.rawMessage };
  }
  if (err instanceof RpcError) {
    const code = GrpcStatusCode[err.code];
    return { code: typeof code === "number" ? code : null, message: err.message, error: `RpcError ${err.code}` };
  }
  return { code: null, error: unexpected(err) };
}

// Something other than a gRPC status: the stack goes to stderr, the line
// keeps the message.
function unexpected(err) {
  console.error(err?.stack ?? err);
  return String(err?.message ?? err);
}

async function unaryCase(client, req, o = {}) {
  try {
    const { reply, headers } = await client.unary(req, o);
    return { code: 0, replies: [summary(reply)], headers };
  } catch (err) {
    return failure(err);
  }
}

async function streamCase(client, req, o = {}) {
  const start = performance.now();
  const replies = [];
  const arrivals_ms = [];
  let end;
  try {
    for await (const r of client.serverStream(req, o)) {
      arrivals_ms.push(performance.now() - start);
      replies.push(summary(r));
    }
    end = { code: 0 };
  } catch (err) {
    end = failure(err);
  }
  return { ...end, replies, arrivals_ms, end_ms: performance.now() - start };
}

// === cases ===

// A grpc-message that needs percent-encoding on the wire.
const statusMessage = (code) => `status ${code}: ünïcödé, 100% & more`;

function grpcCases() {
  const cases = {
    unary: (c, signal) => unaryCase(c.base, { message: "hello portico" }, { signal }),
    "stream-20": (c, signal) => streamCase(c.base, { message: "s", count: 20 }, { signal }),
    "stream-error-after-2": (c, signal) =>
      streamCase(c.base, { message: "stream failed after two", count: 2, code: 9 }, { signal }),
    "deadline-exceeded": (c, signal) =>
      streamCase(c.base, { message: "slow", count: 10, delayMs: 1000 }, { signal, timeoutMs: 300 }),
    "reply-4mib": (c, signal) => unaryCase(c.base, { message: "big", replySize: 4 * MIB }, { signal }),
    "backend-down": (c, signal) => unaryCase(c.down, { message: "nobody home" }, { signal }),
    "slow-stream": (c, signal) =>
      streamCase(c.base, { message: "tick", count: 5, delayMs: 200 }, { signal }),
  };
  for (let code = 1; code <= 16; code++) {
    cases[`status-${code}`] = (c, signal) =>
      unaryCase(c.base, { message: statusMessage(code), code }, { signal });
  }
  return cases;
}

async function preflight(origin) {
  const rsp = await fetch(new URL("/portico.test.Echo/Unary", args.base), {
    method: "OPTIONS",
    headers: {
      origin,
      "access-control-request-method": "POST",
      "access-control-request-headers": "content-type,x-grpc-web,x-user-agent,grpc-timeout",
    },
  });
  const headers = {};
  rsp.headers.forEach((v, k) => (headers[k] = v));
  await rsp.arrayBuffer();
  return { status: rsp.status, headers };
}

const fetchCases = {
  "cors-allowed": () => preflight(args.origin),
  "cors-disallowed": () => preflight("https://evil.example.net"),
};

// === run ===

async function run(client, name, f) {
  const signal = AbortSignal.timeout(CASE_TIMEOUT_MS);
  let out;
  try {
    out = await Promise.race([
      f(signal),
      new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(new Error(`case took over ${CASE_TIMEOUT_MS} ms`))),
      ),
    ]);
  } catch (err) {
    out = { code: null, error: unexpected(err) };
  }
  console.log(JSON.stringify({ client, case: name, ...out }));
}

const wanted = (list, name) => !list || list.includes(name);
const cases = grpcCases();
for (const [clientName, make] of Object.entries(CLIENTS)) {
  if (!wanted(args.client, clientName)) continue;
  const c = { base: make(args.base), down: make(args.down) };
  for (const [name, f] of Object.entries(cases)) {
    if (wanted(args.case, name)) await run(clientName, name, (signal) => f(c, signal));
  }
}
if (wanted(args.client, "fetch")) {
  for (const [name, f] of Object.entries(fetchCases)) {
    if (wanted(args.case, name)) await run("fetch", name, f);
  }
}
// connect-node keeps HTTP/2 sessions open; do not wait for them to idle out.
process.exit(0);
