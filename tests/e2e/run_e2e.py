"""End-to-end tests of `flowbalancer serve` with the official MCP Python SDK (`mcp` on PyPI),
run by `cargo xtask e2e` (and `cargo xtask ci`) from a venv under target/.

Usage: python run_e2e.py path/to/flowbalancer
"""

import asyncio
import re
import json
import os
import signal
import subprocess
import sys
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
try:  # mcp 2.x
    from mcp.shared.exceptions import MCPError as McpError
except ImportError:  # mcp 1.x
    from mcp.shared.exceptions import McpError

BINARY = sys.argv[1]
checks = 0


def field(obj, name):
    """An attribute under its 1.x name (camelCase) or its 2.x name (snake_case)."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if hasattr(obj, snake):
        return getattr(obj, snake)
    return getattr(obj, name)


def check(condition, message):
    global checks
    if not condition:
        raise AssertionError(message)
    checks += 1


async def sdk_session():
    params = StdioServerParameters(command=BINARY, args=["serve"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(field(init, 'serverInfo').name == "flowbalancer", f"server name {field(init, 'serverInfo').name}")

            tools = await session.list_tools()
            names = {t.name for t in tools.tools}
            check({"echo", "word_count", "sleep", "fib", "pid"} <= names, f"tools {names}")
            for tool in tools.tools:
                check(field(tool, 'inputSchema').get("type") == "object", f"{tool.name} has an object schema")

            # Each tool once.
            r = await session.call_tool("echo", {"text": "héllo"})
            check(not field(r, 'isError') and field(r, 'structuredContent') == {"text": "héllo"}, f"echo {r}")
            r = await session.call_tool("word_count", {"text": "a b  c"})
            check(field(r, 'structuredContent') == {"words": 3}, f"word_count {r}")
            r = await session.call_tool("sleep", {"ms": 20})
            check(not field(r, 'isError') and "slept" in r.content[0].text, f"sleep {r}")
            r = await session.call_tool("fib", {"n": 10})
            check(field(r, 'structuredContent')["fib"] == 55, f"fib {r}")
            check((field(r, 'meta') or {}).get("flowbalancer/tier") == "cold", f"fib is served by the cold tier: {field(r, 'meta')}")

            # A caller error is a tool error with structured content, not a protocol error.
            r = await session.call_tool("echo", {})
            check(field(r, 'isError') and field(r, 'structuredContent')["kind"] == "rejected", f"bad params {r}")

            # An unknown tool is a JSON-RPC error.
            try:
                await session.call_tool("teleport", {})
                check(False, "an unknown tool must fail")
            except McpError as error:
                check(error.error.code == -32602, f"unknown tool code {error.error.code}")

            # 200 concurrent calls, each with its own exact result.
            results = await asyncio.gather(*[session.call_tool("echo", {"text": str(i)}) for i in range(200)])
            for i, r in enumerate(results):
                check(not field(r, 'isError') and field(r, 'structuredContent') == {"text": str(i)}, f"concurrent call {i}: {r}")

            # A worker killed during calls: every call is still answered.
            pids = set()
            for _ in range(8):
                pids.add(int((await session.call_tool("pid", {})).content[0].text))
            calls = [asyncio.create_task(session.call_tool("sleep", {"ms": 300})) for _ in range(12)]
            await asyncio.sleep(0.1)
            victim = sorted(pids)[0]
            os.kill(victim, signal.SIGKILL)
            answers = await asyncio.gather(*calls)
            check(len(answers) == 12, "every call answered")
            ok = sum(1 for a in answers if not field(a, 'isError'))
            failed = [a for a in answers if field(a, 'isError')]
            for a in failed:
                check("attempts" in json.dumps(field(a, 'structuredContent')), f"a failure carries its attempts: {a}")
            check(ok >= 1, f"the pool recovered: {ok} ok, {len(failed)} failed")
            r = await session.call_tool("echo", {"text": "after the kill"})
            check(field(r, 'structuredContent') == {"text": "after the kill"}, "serving goes on after the kill")


def raw_protocol():
    """Malformed input lines get JSON-RPC errors and the server keeps serving."""
    process = subprocess.Popen([BINARY, "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def send(line):
        process.stdin.write(line.encode() + b"\n")
        process.stdin.flush()

    def receive():
        return json.loads(process.stdout.readline())

    send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}))
    check(receive()["id"] == 1, "initialized")
    send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    send("{ this is not json")
    error = receive()
    check(error["error"]["code"] == -32700 and error["id"] is None, f"parse error {error}")
    send('["not", "a", "request"]')
    check(receive()["error"]["code"] == -32600, "invalid request")
    send("\x00\x01\x02 binary garbage")
    check(receive()["error"]["code"] == -32700, "garbage is a parse error")
    # A method MCP defines, with params that do not fit it: invalid params, not "method not found".
    for bad_id, params in (("bad-1", {"name": "echo", "arguments": "not an object"}), ("bad-2", None)):
        request = {"jsonrpc": "2.0", "id": bad_id, "method": "tools/call"}
        if params is not None:
            request["params"] = params
        send(json.dumps(request))
        error = receive()
        check(error.get("id") == bad_id and error["error"]["code"] == -32602
              and "tools/call" in error["error"]["message"], f"malformed tools/call params: {error}")
    send(json.dumps({"jsonrpc": "2.0", "id": "bad-3", "method": "no/such/method"}))
    error = receive()
    check(error.get("id") == "bad-3" and error["error"]["code"] == -32601, f"an unknown method: {error}")
    send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "still here"}}}))
    answer = receive()
    check(answer["id"] == 2 and answer["result"]["structuredContent"] == {"text": "still here"}, f"still serving {answer}")

    # Progress: the worker's reports reach the client with the client's own token.
    send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "sleep", "arguments": {"ms": 400}, "_meta": {"progressToken": "tok-3"}}}))
    progress = []
    while True:
        message = receive()
        if message.get("method") == "notifications/progress":
            progress.append(message["params"])
            continue
        check(message.get("id") == 3, f"the call's answer {message}")
        break
    check(len(progress) >= 2, f"progress notifications arrived: {progress}")
    check(all(p["progressToken"] == "tok-3" and p["total"] == 400 for p in progress), f"with the client's token {progress}")
    check([p["progress"] for p in progress] == sorted(p["progress"] for p in progress), "increasing")

    # Cancel: a cancelled long call does not tie up its tier. `sleep` goes to the warm tier,
    # which has one worker: the next call there is served at once, not after the cancelled
    # one's 60 s.
    send(json.dumps({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 60000}}}))
    time.sleep(0.3)
    send(json.dumps({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 4, "reason": "test"}}))
    started = time.time()
    send(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": 10}}}))
    while True:
        message = receive()
        if message.get("id") == 5:
            break
    took = time.time() - started
    check(message["result"].get("isError") is not True, f"served after the cancel {message}")
    check((message["result"].get("_meta") or {}).get("flowbalancer/tier") == "warm", f"by the warm tier itself {message}")
    check(took < 5, f"the tier was free within {took:.1f}s of the cancel")

    process.stdin.close()
    check(process.wait(timeout=30) == 0, "clean exit on EOF")
    process.stdout.close()


def main():
    started = time.time()
    asyncio.run(sdk_session())
    raw_protocol()
    print(f"e2e: {checks} passed, 0 failed ({time.time() - started:.1f}s)")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"e2e: {checks} passed, 1 failed: {failure}")
        sys.exit(1)
