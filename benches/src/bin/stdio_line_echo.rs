//! The platform's floor for a round trip over stdio: a process that answers each JSON-RPC
//! request line on stdin with an empty result on stdout. Blocking reads and writes, no async
//! runtime, no MCP. The gateway bench drives it with the same minimal client as
//! `flowbalancer serve`: what the two pipes and the two processes' wake-ups cost alone.

use std::io::{BufRead, Write};

use serde_json::{Value, json};

fn main() {
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        // Notifications get no answer.
        let Some(id) = message.get("id") else {
            continue;
        };
        let reply = json!({ "jsonrpc": "2.0", "id": id, "result": {} });
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}
