#!/usr/bin/env python3
"""A small stdio MCP server for tests, standard library only.

Usage: fake_mcp.py MODE. Modes: ok (a well-behaved server), garbage (writes a banner to
stdout), hang_init (never answers initialize), crash (exits at once), stderr_flood (floods
stderr, then serves), wrong_id (answers calls with an id never sent), huge (answers calls
with a 100 MB line), crash_on_call (exits when a tool is called).
"""
import json
import sys
import threading
import time

MODE = sys.argv[1] if len(sys.argv) > 1 else "ok"
out_lock = threading.Lock()
cancelled = set()
pending_client = {}  # our request id -> event, result


def send(message):
    line = json.dumps(message) + "\n"
    with out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


TOOLS = [
    {"name": "echo", "title": "Echo", "description": "Echoes", "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}},
     "outputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}, "_meta": {"x/custom": 1}, "execution": {"taskSupport": "forbidden"}},
    {"name": "slow", "description": "Sleeps", "inputSchema": {"type": "object"}},
    {"name": "stubborn", "description": "Ignores cancellation", "inputSchema": {"type": "object"}},
    {"name": "progress", "description": "Reports progress", "inputSchema": {"type": "object"}},
    {"name": "ask", "description": "Asks the client for sampling", "inputSchema": {"type": "object"}},
    {"name": "fail", "description": "Returns isError", "inputSchema": {"type": "object"}},
    {"name": "change", "description": "Adds a tool and says list_changed", "inputSchema": {"type": "object"}},
    {"name": "pid", "description": "Its process id", "inputSchema": {"type": "object"}},
    {"name": "bad tool name!", "description": "A name a prefix cannot fix", "inputSchema": {"type": "object"}},
    {"name": "no_schema", "description": "Malformed: no inputSchema"},
]


def tool_call(rid, params):
    name = params.get("name")
    args = params.get("arguments") or {}
    token = (params.get("_meta") or {}).get("progressToken")
    if name == "echo":
        result = {"content": [{"type": "text", "text": args.get("message", "")},
                              {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}],
                  "structuredContent": {"echo": args.get("message", "")}, "_meta": {"x/served": True}}
    elif name == "slow":
        end = time.time() + float(args.get("seconds", 5))
        while time.time() < end:
            if rid in cancelled:
                return  # a cancelled request gets no answer
            time.sleep(0.01)
        result = {"content": [{"type": "text", "text": "slept"}]}
    elif name == "stubborn":
        time.sleep(float(args.get("seconds", 5)))
        result = {"content": [{"type": "text", "text": "done anyway"}]}
    elif name == "progress":
        for i in range(3):
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": i + 1, "total": 3, "message": f"step {i + 1}"}})
            time.sleep(0.02)
        result = {"content": [{"type": "text", "text": "progressed"}]}
    elif name == "ask":
        ask_id = f"s{rid}"
        event = threading.Event()
        pending_client[ask_id] = [event, None]
        send({"jsonrpc": "2.0", "id": ask_id, "method": "sampling/createMessage",
              "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}], "maxTokens": 5}})
        send({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "asked"}})
        event.wait(10)
        result = {"content": [{"type": "text", "text": json.dumps(pending_client.pop(ask_id)[1])}]}
    elif name == "fail":
        result = {"content": [{"type": "text", "text": "it went wrong"}], "isError": True}
    elif name == "change":
        TOOLS.append({"name": "added", "description": "New", "inputSchema": {"type": "object"}})
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        result = {"content": [{"type": "text", "text": "changed"}]}
    elif name == "pid":
        import os
        result = {"content": [{"type": "text", "text": str(os.getpid())}]}
    elif name == "added":
        result = {"content": [{"type": "text", "text": "added works"}]}
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})
        return
    if MODE == "crash_on_call":
        import os
        os._exit(3)
    if MODE == "wrong_id":
        rid = 999999
    if MODE == "huge":
        sys.stdout.write('{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"' % rid)
        chunk = "x" * (1 << 20)
        for _ in range(100):
            sys.stdout.write(chunk)
        sys.stdout.write('"}]}}\n')
        sys.stdout.flush()
        return
    send({"jsonrpc": "2.0", "id": rid, "result": result})


def handle(message):
    method = message.get("method")
    rid = message.get("id")
    params = message.get("params") or {}
    if method is None:
        entry = pending_client.get(rid)
        if entry:
            entry[1] = message.get("result", message.get("error"))
            entry[0].set()
        return
    if method == "initialize":
        if MODE == "hang_init":
            return
        send({"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {"listChanged": True}, "resources": {}, "prompts": {}, "logging": {}, "completions": {}},
            "serverInfo": {"name": "fake", "version": "1"}}})
    elif method == "notifications/cancelled":
        cancelled.add(params.get("requestId"))
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": rid, "result": {}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}})
    elif method == "resources/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"resources": [{"uri": "fake://one", "name": "one", "mimeType": "text/plain"}]}})
    elif method == "resources/templates/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"resourceTemplates": [{"uriTemplate": "fake://{n}", "name": "n"}]}})
    elif method == "resources/read":
        send({"jsonrpc": "2.0", "id": rid, "result": {"contents": [{"uri": params.get("uri"), "text": "content of " + str(params.get("uri"))}]}})
    elif method == "prompts/list":
        send({"jsonrpc": "2.0", "id": rid, "result": {"prompts": [{"name": "greet", "arguments": [{"name": "who"}]}]}})
    elif method == "prompts/get":
        who = (params.get("arguments") or {}).get("who", "you")
        send({"jsonrpc": "2.0", "id": rid, "result": {"messages": [{"role": "user", "content": {"type": "text", "text": f"hello {who}"}}]}})
    elif method == "tools/call":
        threading.Thread(target=tool_call, args=(rid, params), daemon=True).start()
    elif rid is not None:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"Method not found: {method}"}})


def main():
    if MODE.startswith("once:"):
        # Starts once; every later start fails (a backend that went down for good).
        import os
        marker = MODE[len("once:"):]
        if os.path.exists(marker):
            sys.stderr.write("down for good\n")
            sys.exit(1)
        open(marker, "w").close()
    if MODE == "crash":
        sys.stderr.write("fatal: cannot find module 'imaginary'\n")
        sys.exit(1)
    if MODE == "garbage":
        sys.stdout.write("Server running on stdio (this banner belongs on stderr)\n")
        sys.stdout.flush()
    if MODE == "stderr_flood":
        def flood():
            line = "noise " * 30 + "\n"
            end = time.time() + 3
            while time.time() < end:
                sys.stderr.write(line * 100)
        threading.Thread(target=flood, daemon=True).start()
    for line in sys.stdin:
        line = line.strip()
        if line:
            handle(json.loads(line))


main()
