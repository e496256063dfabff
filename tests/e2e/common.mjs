// What the Node end-to-end tests share: counted checks, the calls every client makes, and a
// `flowbalancer serve --http` on a free loopback port.

import { spawn } from "node:child_process";

/** The gateway's process and its MCP URL, read from the line it prints on stderr. */
export async function startHttpGateway(binary) {
  const server = spawn(binary, ["serve", "--http", "127.0.0.1:0"], { stdio: ["ignore", "ignore", "pipe"] });
  const url = await new Promise((resolve, reject) => {
    let buffer = "";
    server.stderr.on("data", (chunk) => {
      buffer += chunk.toString();
      // Only a whole line: a chunk may end inside the address.
      const match = buffer.match(/serving MCP over HTTP at (\S+)\r?\n/);
      if (match) resolve(match[1]);
    });
    server.on("exit", () => reject(new Error("the gateway exited")));
    setTimeout(() => reject(new Error("the gateway did not start")), 30000);
  });
  return { server, url };
}

let checks = 0;

/** Fails the test with `message` unless `condition` holds; counts the check. */
export function check(condition, message) {
  if (!condition) throw new Error(message);
  checks += 1;
}

/** How many checks passed so far. */
export function checksPassed() {
  return checks;
}

/** The bundled tools through `client`: listed, called, and a bad argument refused as a tool error. */
export async function exerciseBundledTools(client, label) {
  const tools = (await client.listTools()).tools.map((t) => t.name);
  for (const name of ["echo", "word_count", "fib"]) check(tools.includes(name), `${label}: ${name} listed: ${tools}`);
  const echo = await client.callTool({ name: "echo", arguments: { text: "héllo" } });
  check(!echo.isError && echo.structuredContent?.text === "héllo", `${label}: echo ${JSON.stringify(echo)}`);
  const fib = await client.callTool({ name: "fib", arguments: { n: 20 } });
  check(fib.structuredContent?.fib === 6765, `${label}: fib ${JSON.stringify(fib)}`);
  const bad = await client.callTool({ name: "fib", arguments: { n: "twenty" } });
  check(bad.isError === true, `${label}: a bad argument is a tool error ${JSON.stringify(bad)}`);
}
