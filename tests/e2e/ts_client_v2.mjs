// End-to-end: the TypeScript MCP SDK's v2 client (`@modelcontextprotocol/client` 2.x, the SDK's
// current release line) against `flowbalancer serve`, over stdio and over streamable HTTP, in
// each of its version-negotiation modes: the default (`initialize`, 2025-11-25), `auto` (a
// `server/discover` probe, 2026-07-28 when the server offers it) and a pin to 2026-07-28. Over
// stdio, `auto` and the pin probe on a throwaway sibling process that the SDK kills: it must
// leave nothing running. Run by `cargo xtask e2e`.
//
// Usage: node ts_client_v2.mjs path/to/flowbalancer path/to/node_modules

import { randomUUID } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

import { check, checksPassed, exerciseBundledTools, startHttpGateway } from "./common.mjs";

const [binary, modules] = process.argv.slice(2);
const sdk = (file) => import(pathToFileURL(path.join(modules, "@modelcontextprotocol/client/dist", file)).href);
const { Client, StreamableHTTPClientTransport } = await sdk("index.mjs");
const { StdioClientTransport } = await sdk("stdio.mjs");

const modes = [
  { label: "default", options: {}, era: "2025-11-25" },
  { label: "auto", options: { versionNegotiation: { mode: "auto" } }, era: "2026-07-28" },
  { label: "pin", options: { versionNegotiation: { mode: { pin: "2026-07-28" } } }, era: "2026-07-28" },
];

async function exercise(client, label, era) {
  check(client.getNegotiatedProtocolVersion() === era, `${label}: negotiated ${client.getNegotiatedProtocolVersion()}, expected ${era}`);
  await exerciseBundledTools(client, label);
  const unknown = await client.callTool({ name: "no_such_tool", arguments: {} }).then(
    (result) => ({ result }),
    (error) => ({ error: String(error) }),
  );
  check(unknown.error?.includes("no_such_tool") || unknown.result?.isError === true,
    `${label}: an unknown tool is refused ${JSON.stringify(unknown)}`);
}

/** The pids of live processes whose environment holds `mark` (a gateway and any probe sibling). */
function marked(mark) {
  const pids = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "latin1");
      const state = readFileSync(`/proc/${entry}/stat`, "latin1").split(") ")[1]?.[0];
      if (environ.includes(mark) && state !== "Z") pids.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}

// Over stdio.
for (const { label, options, era } of modes) {
  const value = randomUUID();
  const mark = `FLOWBALANCER_E2E_MARK=${value}`;
  const client = new Client({ name: "ts-v2-e2e", version: "1.0.0" }, options);
  // Keep our environment (XDG_STATE_HOME: the gateway's telemetry stays under target/).
  await client.connect(new StdioClientTransport({
    command: binary, args: ["serve"], stderr: "ignore", env: { ...process.env, FLOWBALANCER_E2E_MARK: value },
  }));
  await exercise(client, `stdio ${label}`, era);
  await client.close();
  let left = marked(mark);
  for (let waited = 0; left.length > 0 && waited < 10000; waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    left = marked(mark);
  }
  check(left.length === 0, `stdio ${label}: every gateway process (probe sibling included) is gone: ${left}`);
}

// Over streamable HTTP.
{
  const { server, url } = await startHttpGateway(binary);
  try {
    for (const { label, options, era } of modes) {
      const client = new Client({ name: "ts-v2-e2e", version: "1.0.0" }, options);
      await client.connect(new StreamableHTTPClientTransport(new URL(url)));
      await exercise(client, `http ${label}`, era);
      await client.close();
    }
  } finally {
    server.kill("SIGTERM");
  }
}
console.log(`TypeScript SDK v2 client end to end: ${checksPassed()} checks passed`);
