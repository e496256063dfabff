// End-to-end: the official TypeScript MCP SDK (1.x) client against `flowbalancer serve`, over
// stdio and over streamable HTTP. Run by `cargo xtask e2e`.
//
// Usage: node ts_client.mjs path/to/flowbalancer path/to/node_modules

import { pathToFileURL } from "node:url";
import path from "node:path";

import { startHttpGateway } from "./start_gateway.mjs";

const [binary, modules] = process.argv.slice(2);
const sdk = (file) => import(pathToFileURL(path.join(modules, "@modelcontextprotocol/sdk/dist/esm", file)).href);
const { Client } = await sdk("client/index.js");
const { StdioClientTransport } = await sdk("client/stdio.js");
const { StreamableHTTPClientTransport } = await sdk("client/streamableHttp.js");

let checks = 0;
function check(condition, message) {
  if (!condition) throw new Error(message);
  checks += 1;
}

async function exercise(client, label) {
  const tools = (await client.listTools()).tools.map((t) => t.name);
  for (const name of ["echo", "word_count", "fib"]) check(tools.includes(name), `${label}: ${name} listed: ${tools}`);
  const echo = await client.callTool({ name: "echo", arguments: { text: "héllo" } });
  check(!echo.isError && echo.structuredContent?.text === "héllo", `${label}: echo ${JSON.stringify(echo)}`);
  const fib = await client.callTool({ name: "fib", arguments: { n: 20 } });
  check(fib.structuredContent?.fib === 6765, `${label}: fib ${JSON.stringify(fib)}`);
  const bad = await client.callTool({ name: "fib", arguments: { n: "twenty" } });
  check(bad.isError === true, `${label}: a bad argument is a tool error ${JSON.stringify(bad)}`);
}

// Over stdio.
{
  const client = new Client({ name: "ts-e2e", version: "1.0.0" });
  // The SDK passes a server only a few variables (PATH, HOME, …): keep ours, so the gateway's
  // telemetry goes where the test run points it (XDG_STATE_HOME), not to the user's own.
  await client.connect(new StdioClientTransport({ command: binary, args: ["serve"], stderr: "ignore", env: { ...process.env } }));
  check(client.getServerVersion()?.name === "flowbalancer", "stdio: server name");
  await exercise(client, "stdio");
  await client.close();
}

// Over streamable HTTP.
{
  const { server, url } = await startHttpGateway(binary);
  try {
    const client = new Client({ name: "ts-e2e", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(url)));
    check(client.getServerVersion()?.name === "flowbalancer", "http: server name");
    await exercise(client, "http");
    await client.close();
  } finally {
    server.kill("SIGTERM");
  }
}
console.log(`TypeScript SDK client end to end: ${checks} checks passed`);
