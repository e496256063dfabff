// Starts `flowbalancer serve --http` on a free loopback port for the Node end-to-end tests.

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
