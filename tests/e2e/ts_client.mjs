// End-to-end: the official TypeScript MCP SDK (1.x) client against `flowbalancer serve`, over
// stdio and over streamable HTTP. Run by `cargo xtask e2e`.
//
// Usage: node ts_client.mjs path/to/flowbalancer path/to/node_modules

import { pathToFileURL } from "node:url";
import path from "node:path";

import { check, checksPassed, exerciseBundledTools, startHttpGateway } from "./common.mjs";

const [binary, modules] = process.argv.slice(2);
const sdk = (file) => import(pathToFileURL(path.join(modules, "@modelcontextprotocol/sdk/dist/esm", file)).href);
const { Client } = await sdk("client/index.js");
const { StdioClientTransport } = await sdk("client/stdio.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");


// Over stdio.
{
  const client = new Client({ name: "ts-e2e", version: "1.0.0" });
  // The SDK passes a server only a few variables (PATH, HOME, …): keep ours, so the gateway's
  // telemetry goes where the test run points it (XDG_STATE_HOME), not to the user's own.
  await client.connect(new StdioClientTransport({ command: binary, args: ["serve"], stderr: "ignore", env: { ...process.env } }));
  check(client.getServerVersion()?.name === "flowbalancer", "stdio: server name");
  await exerciseBundledTools(client, "stdio");
  await client.close();
}

// Over streamable HTTP.
{
  const { server, url } = await startHttpGateway(binary);
  try {
    const client = new Client({ name: "ts-e2e", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    check(client.getServerVersion()?.name === "flowbalancer", "http: server name");
    await exerciseBundledTools(client, "http");
    await client.close();
  } finally {
    server.kill("SIGTERM");
  }
}
console.log(`TypeScript SDK client end to end: ${checksPassed()} checks passed`);
