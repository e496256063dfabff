"""End-to-end: `flowbalancer serve --http`, driven by the official MCP Python SDK (`mcp` 2.x)
over streamable HTTP, plus raw HTTP requests for what a well-behaved client never sends.
Run by `cargo xtask e2e`.

Usage: python http_gateway.py path/to/flowbalancer
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

BINARY = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
checks = 0


def check(condition, message):
    global checks
    if not condition:
        raise AssertionError(message)
    checks += 1


def start(config_text, directory, env=None):
    path = os.path.join(directory, f"gateway-{time.monotonic_ns()}.toml")
    with open(path, "w") as f:
        f.write(config_text)
    process = subprocess.Popen([BINARY, "serve", "--config", path, "--http", "127.0.0.1:0"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, **(env or {})}, text=True)
    for line in process.stderr:
        if "serving MCP over HTTP at " in line:
            url = line.split("serving MCP over HTTP at ")[1].strip()
            break
    else:
        raise AssertionError("the gateway did not start")
    # Keep draining its stderr.
    import threading
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
    return process, url


def raw(url, body=None, headers=None, method="POST"):
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def oversized(url, size):
    """POSTs a body of `size` bytes the way a client that streams it does, reading the answer
    as soon as the server gives one (it refuses before reading it all)."""
    import socket
    from urllib.parse import urlparse
    parts = urlparse(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                f"Content-Length: {size}\r\n\r\n")
        sock.sendall(head.encode())
        try:
            sock.sendall(b"x" * (1024 * 1024))
        except OSError:
            pass
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 200:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return status, answer


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}


def raw_session(url):
    """A session opened by hand: initialize, then notifications/initialized."""
    status, headers, _ = raw(url, INIT)
    session = headers.get("mcp-session-id") or headers.get("Mcp-Session-Id")
    check(status == 200 and session, f"raw initialize {status} {headers}")
    raw(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"mcp-session-id": session})
    return session


def answers(body):
    """The JSON-RPC messages of a response: its SSE events' data, or its JSON body."""
    text = body.decode(errors="replace")
    try:
        events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip()]
        return events if events or not text.strip() else [json.loads(text)]
    except ValueError:
        return []  # not JSON-RPC (a plain-text 404, say): no messages


def stateless_answer(url):
    """A 2026-07-28 request stands alone (no session): its answer, when nothing comes before
    it, is one JSON body, not an event stream."""
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}
    status, headers, body = raw(url, {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "alone"}, "_meta": meta}},
        {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "echo"})
    kind = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    got = answers(body)
    check(status == 200 and kind.startswith("application/json") and got and got[-1].get("id") == 9
          and got[-1]["result"]["structuredContent"] == {"text": "alone"}
          and got[-1]["result"].get("resultType") == "complete",
          f"a 2026-07-28 call's answer is one JSON body: {status} {kind} {got}")
    # A header that contradicts the body is still refused (rmcp's SEP-2243 check).
    status, _, body = raw(url, {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {
        "name": "echo", "arguments": {"text": "alone"}, "_meta": meta}},
        {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "sleep"})
    got = answers(body)
    check(status == 400 and got and "error" in got[-1], f"a wrong Mcp-Name is refused: {status} {got}")
    # A 2026-07-28 tools/list, answered as JSON too, keeps the fields rmcp does not model.
    status, headers, body = raw(url, {"jsonrpc": "2.0", "id": 11, "method": "tools/list", "params": {"_meta": meta}},
                                {"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/list"})
    got = answers(body)
    tools = {t["name"]: t for m in got if "result" in m for t in m["result"]["tools"]}
    check(status == 200 and got and got[-1]["result"].get("resultType") == "complete"
          and tools.get("test_simple_text", {}).get("execution") == {"taskSupport": "forbidden"},
          f"a 2026-07-28 tools/list keeps whole definitions: {status} {tools.get('test_simple_text')}")


def direct_calls(url):
    """Calls of tools no MCP server serves are answered on their request's own stream,
    outside rmcp's session worker: what the worker does for a call must still happen."""
    import threading
    session = raw_session(url)
    call = lambda id, name, arguments: {"jsonrpc": "2.0", "id": id, "method": "tools/call",
                                        "params": {"name": name, "arguments": arguments}}
    # A `_meta.sessionId` names the balancer session, as through the worker.
    status, _, body = raw(url, {**call(3, "echo", {"text": "direct"}),
                                "params": {"name": "echo", "arguments": {"text": "direct"},
                                           "_meta": {"sessionId": "named"}}}, {"mcp-session-id": session})
    got = answers(body)
    check(status == 200 and got and got[-1].get("id") == 3
          and got[-1]["result"]["structuredContent"] == {"text": "direct"}
          and "resultType" not in got[-1]["result"], f"a direct call's answer: {status} {got}")
    # notifications/cancelled stops it: its stream ends without an answer, and the tier's one
    # worker is free at once.
    ended = {}

    def sleeper():
        started = time.monotonic()
        status, _, body = raw(url, call(4, "sleep", {"ms": 30000}), {"mcp-session-id": session})
        ended.update(status=status, body=body, took=time.monotonic() - started)
    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.5)
    status, _, _ = raw(url, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                             "params": {"requestId": 4, "reason": "changed my mind"}}, {"mcp-session-id": session})
    check(status == 202, f"notifications/cancelled accepted: {status}")
    thread.join(timeout=10)
    check(not thread.is_alive() and ended["took"] < 5, f"a cancelled direct call's stream ends: {ended}")
    check(not any("result" in m for m in answers(ended["body"])), f"no answer to a cancelled call: {ended}")
    started = time.monotonic()
    status, _, body = raw(url, call(5, "echo", {"text": "next"}), {"mcp-session-id": session})
    check(status == 200 and time.monotonic() - started < 5, f"the worker is free after a cancel: {status} {body[:200]}")
    # A client whose stream drops mid-call has not cancelled it (MCP: a disconnect is not a
    # cancel): the call runs on, so the tier's one worker is busy until it ends.
    request = urllib.request.Request(url, data=json.dumps(call(6, "sleep", {"ms": 2500})).encode(), method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream", "mcp-session-id": session})
    try:
        urllib.request.urlopen(request, timeout=0.5).read()
    except Exception:
        pass
    started = time.monotonic()
    status, _, body = raw(url, call(7, "echo", {"text": "after"}), {"mcp-session-id": session})
    took = time.monotonic() - started
    check(status == 200 and 1.0 < took < 10, f"a dropped stream's call ran on ({took:.1f}s): {status} {body[:200]}")
    # Direct calls keep their session alive past its idle TTL (3 s), though its worker sees none.
    deadline = time.monotonic() + 5
    n, statuses = 8, set()
    while time.monotonic() < deadline:
        status, _, _ = raw(url, call(n, "echo", {"text": "busy"}), {"mcp-session-id": session})
        statuses.add(status)
        n += 1
        time.sleep(0.3)
    check(statuses == {200}, f"every call in a busy session served: {statuses}")
    status, _, body = raw(url, {"jsonrpc": "2.0", "id": n, "method": "tools/list"}, {"mcp-session-id": session})
    check(status == 200 and any("result" in m for m in answers(body)),
          f"a session busy with direct calls outlives its idle TTL: {status} {body[:200]}")
    # A call longer than the TTL keeps its otherwise idle session: a session with a call
    # running is in use.
    status, _, body = raw(url, call(n + 1, "sleep", {"ms": 4500}), {"mcp-session-id": session})
    check(status == 200 and any("slept" in json.dumps(m.get("result")) for m in answers(body)),
          f"a call longer than the TTL answered: {status} {body[:300]}")
    status, _, body = raw(url, call(n + 2, "echo", {"text": "still here"}), {"mcp-session-id": session})
    check(status == 200, f"the session outlived its TTL while its call ran: {status} {body[:200]}")
    n += 3
    # DELETE ends it, and cancels the calls it has running.
    ended.clear()
    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.5)
    status, _, _ = raw(url, None, {"mcp-session-id": session}, method="DELETE")
    check(status in (200, 204), f"DELETE: {status}")
    thread.join(timeout=10)
    check(not thread.is_alive() and ended["took"] < 5 and not any("result" in m for m in answers(ended["body"])),
          f"the end of a session cancels its direct calls: {ended}")
    status, _, _ = raw(url, call(n + 1, "echo", {"text": "gone"}), {"mcp-session-id": session})
    check(status == 404, f"a direct call in an ended session: {status}")
    # A session's first direct call comes late in its TTL (3 s): it still keeps the session.
    late = raw_session(url)
    time.sleep(2.5)
    statuses = set()
    for i in range(8):
        status, _, _ = raw(url, call(100 + i, "echo", {"text": "late"}), {"mcp-session-id": late})
        statuses.add(status)
        time.sleep(0.25)
    check(statuses == {200}, f"direct calls begun late in the TTL keep the session: {statuses}")


def listening_keeps_session(url):
    """A client listening on its session's GET stream is using the session: it outlives its
    idle TTL (3 s) with no request at all, and expires once the client stops listening."""
    import http.client
    from urllib.parse import urlparse
    parts = urlparse(url)
    session = raw_session(url)
    listener = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    listener.request("GET", parts.path, headers={"Accept": "text/event-stream", "mcp-session-id": session})
    stream = listener.getresponse()
    check(stream.status == 200 and "text/event-stream" in stream.getheader("content-type", ""),
          f"a session's GET stream opens: {stream.status} {stream.getheaders()}")
    time.sleep(4.5)
    status, _, body = raw(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, {"mcp-session-id": session})
    check(status == 200 and any("result" in m for m in answers(body)),
          f"a session whose client listens outlives its idle TTL: {status} {body[:200]}")
    listener.close()
    time.sleep(4.5)
    status, _, body = raw(url, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, {"mcp-session-id": session})
    check(status == 404, f"a session nobody listens on or calls in expires after its TTL: {status} {body[:200]}")


async def round_trips(server, over):
    """A 2026-07-28 client with sampling and elicitation callbacks, through the conformance
    backend's test_sampling and test_elicitation (each asks the client mid-call)."""
    from mcp import Client
    import mcp.types as types

    async def sampling(context, params):
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="sampled"),
                                         model="e2e", stop_reason="endTurn")

    async def elicitation(context, params):
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.org"})

    async with Client(server, sampling_callback=sampling, elicitation_callback=elicitation) as client:
        check(client.session.protocol_version == "2026-07-28", f"{over}: negotiated {client.session.protocol_version}")
        with anyio.fail_after(30):
            r = await client.call_tool("test_sampling", {"prompt": "hello"})
        check(not r.is_error and "sampled" in r.content[0].text, f"{over}: sampling as input_required {r}")
        with anyio.fail_after(30):
            r = await client.call_tool("test_elicitation", {"message": "who?"})
        check(not r.is_error and "ada@example.org" in r.content[0].text, f"{over}: elicitation as input_required {r}")
    # Without the capability, the backend hears that the client lacks it (no round trip).
    async with Client(server) as client:
        with anyio.fail_after(30):
            r = await client.call_tool("test_sampling", {"prompt": "hello"})
        check(r.is_error and "does not support sampling" in r.content[0].text, f"{over}: no sampling capability {r}")


async def sessions_stick(url, n):
    """n concurrent client sessions, each making several calls: each session's calls stay on
    one instance (strict affinity keyed on Mcp-Session-Id)."""
    seen = {}

    async def one(i):
        async with streamable_http_client(url) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                pids = []
                for _ in range(3):
                    r = await session.call_tool("whoami", {})
                    pids.append(r.content[0].text)
                seen[i] = pids

    async with anyio.create_task_group() as group:
        for i in range(n):
            group.start_soon(one, i)
    return seen


async def main():
    with tempfile.TemporaryDirectory() as directory:
        python = sys.executable
        cancel_log = os.path.join(directory, "cancelled.txt")
        config = f"""
# The checks list tools at once: wait for every server, however slow this machine.
start_wait = "60s"

[telemetry]
enabled = false

[sessions]
affinity = "strict_queue"

[http]
session_ttl = "3s"

[[tiers]]
name = "py"
workers = {{ mcp = ["{python}", "{HERE}/servers/py_tools.py"] }}
size = 4
queue_timeout = "30s"

[[tiers]]
name = "backend"
workers = {{ mcp = ["python3", "{ROOT}/tests/conformance/backend.py"] }}
size = 1
env = {{ CANCEL_LOG = "{cancel_log}" }}

[[tiers]]
name = "local"
workers = {{ builtin = ["echo", "sleep"] }}
size = 1
queue_timeout = "20s"

[[tiers]]
name = "own"
workers = {{ mcp = ["{python}", "{HERE}/servers/py_tools.py"] }}
size = 1
max_overflow = 2
isolation = "session"
tool_prefix = "own_"
"""
        gateway, url = start(config, directory)
        try:
            base = url.rsplit("/", 1)[0]
            status, _, body = raw(base + "/healthz", method="GET")
            check(status == 200, f"healthz {status}")
            status, _, body = raw(base + "/readyz", method="GET")
            check(status == 200 and json.loads(body)["ready"], f"readyz {status} {body}")
            for probe in ("/healthz", "/readyz"):
                status, _, body = raw(base + probe, method="HEAD")
                check(status == 200 and body == b"", f"HEAD {probe}: {status} {body[:100]}")

            # One client, the basics.
            notices = []

            async def on_message(message):
                notices.append(getattr(getattr(message, "root", message), "method", None))

            async with streamable_http_client(url) as streams:
                async with ClientSession(streams[0], streams[1], message_handler=on_message) as session:
                    await session.initialize()
                    tools = {t.name for t in (await session.list_tools()).tools}
                    check({"echo", "add", "whoami", "test_simple_text"} <= tools, f"tools over HTTP: {sorted(tools)}")
                    r = await session.call_tool("add", {"a": 20, "b": 22})
                    check(r.content[0].text == "42", f"add over HTTP {r}")
                    r = await session.call_tool("echo", {"text": "über"})
                    check(r.structured_content == {"text": "über"}, f"echo over HTTP {r}")
                    # A backend's list_changed: re-listed, and every client told.
                    await session.call_tool("add_a_tool", {})
                    deadline = time.monotonic() + 5
                    while "notifications/tools/list_changed" not in notices and time.monotonic() < deadline:
                        await anyio.sleep(0.05)
                    check("notifications/tools/list_changed" in notices, f"list_changed reached the client: {notices}")
                    tools = {t.name for t in (await session.list_tools()).tools}
                    check("added_later" in tools, f"the new tool is listed: {sorted(tools)}")
                    r = await session.call_tool("added_later", {})
                    check(r.content[0].text == "added later, and served", f"the new tool is served {r}")

            # The 2026-07-28 revision (server/discover, resultType on every result), over HTTP
            # and over stdio, with the SDK's high-level client.
            from mcp import Client, StdioServerParameters
            async with Client(url) as client:
                check(client.session.protocol_version == "2026-07-28", f"HTTP negotiated {client.session.protocol_version}")
                tools = {t.name for t in (await client.list_tools()).tools}
                check("add" in tools, f"2026-07-28 tools/list over HTTP: {sorted(tools)}")
                r = await client.call_tool("add", {"a": 1, "b": 2})
                check(r.content[0].text == "3", f"2026-07-28 tools/call over HTTP {r}")
                r = await client.read_resource("test://static-text")
                check("static text" in r.contents[0].text, f"2026-07-28 resources/read {r}")
            # 2026-07-28 takes no server request mid-call: a backend's sampling and elicitation
            # reach the client as `input_required` results, and its retry carries the answers.
            await round_trips(url, "HTTP")
            # 2026-07-28 requests carry no session: a call to an isolated tier gets a worker
            # of its own for that call alone; a session named in `_meta` keeps its worker.
            async with Client(url) as client:
                async def whoami(meta=None):
                    r = await client.call_tool("own_whoami", {}, meta=meta)
                    check(not r.is_error, f"own_whoami {r}")
                    return r.content[0].text
                alone = [await whoami(), await whoami()]
                check(alone[0] != alone[1], f"sessionless calls share no worker: {alone}")
                mine = [await whoami({"sessionId": "e2e-a"}) for _ in range(3)]
                check(len(set(mine)) == 1, f"a named session keeps its worker: {mine}")
                other = await whoami({"sessionId": "e2e-b"})
                check(other != mine[0], f"another named session, another worker: {mine[0]} / {other}")
            # subscriptions/listen (2026-07-28) carries list_changed.
            async with Client(url) as client:
                async with client.listen(tools_list_changed=True) as subscription:
                    check(subscription.honored.tools_list_changed, f"listen honored: {subscription.honored}")
                    async with Client(url) as other:
                        await other.call_tool("add_a_tool", {"name": "added_later_for_listen"})
                    with anyio.fail_after(10):
                        event = await subscription.__anext__()
                    check(type(event).__name__ == "ToolsListChanged", f"a list change on the listen stream: {event}")
            config_path = os.path.join(directory, "stdio.toml")
            with open(config_path, "w") as f:
                f.write(config)
            await round_trips(StdioServerParameters(command=BINARY, args=["serve", "--config", config_path],
                                                    env=dict(os.environ)), "stdio")
            stdio = StdioServerParameters(command=BINARY, args=["serve"], env=dict(os.environ))
            async with Client(stdio) as client:
                check(client.session.protocol_version == "2026-07-28", f"stdio negotiated {client.session.protocol_version}")
                r = await client.call_tool("fib", {"n": 10})
                check(r.structured_content["fib"] == 55, f"2026-07-28 tools/call over stdio {r}")

            # 200 concurrent sessions, each pinned to one instance.
            started = time.monotonic()
            seen = await sessions_stick(url, 200)
            check(len(seen) == 200, f"200 sessions served: {len(seen)}")
            split = [i for i, pids in seen.items() if len(set(pids)) != 1]
            check(not split, f"every session's calls on one instance; split: {split[:5]}")
            spread = {pids[0] for pids in seen.values()}
            check(len(spread) > 1, f"sessions spread over the instances: {spread}")
            print(f"200 sessions x 3 calls in {time.monotonic() - started:.1f}s over {len(spread)} instances")

            # A client that leaves mid-call (its session ends): the call is cancelled at the
            # backend.
            async def leave_mid_call():
                async with streamable_http_client(url) as streams:
                    async with ClientSession(streams[0], streams[1]) as session:
                        await session.initialize()
                        with anyio.move_on_after(1.0):
                            await session.call_tool("slow_until_cancelled", {"seconds": 30})
            await leave_mid_call()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not os.path.exists(cancel_log):
                await anyio.sleep(0.1)
            check(os.path.exists(cancel_log), "the call of a client that left was cancelled at the backend")

            # An abrupt disconnect: the session expires (ttl 3s) and its call is cancelled.
            os.remove(cancel_log)
            status, headers, body = raw(url, INIT)
            session_id = headers.get("mcp-session-id") or headers.get("Mcp-Session-Id")
            check(status == 200 and session_id, f"raw initialize {status} {headers}")
            raw(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"mcp-session-id": session_id})
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "slow_until_cancelled", "arguments": {"seconds": 60}}}
            request = urllib.request.Request(url, data=json.dumps(call).encode(), method="POST", headers={
                "Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                "mcp-session-id": session_id})
            try:
                urllib.request.urlopen(request, timeout=0.5).read()
            except Exception:
                pass  # the client gives up and goes away
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not os.path.exists(cancel_log):
                await anyio.sleep(0.2)
            check(os.path.exists(cancel_log), "an abandoned session's call was cancelled at the backend when it expired")

            # tools/list over HTTP keeps fields of a definition that rmcp does not model.
            status, headers, body = raw(url, INIT)
            sid = headers.get("mcp-session-id") or headers.get("Mcp-Session-Id")
            raw(url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, {"mcp-session-id": sid})
            status, _, body = raw(url, {"jsonrpc": "2.0", "id": 9, "method": "tools/list"}, {"mcp-session-id": sid})
            listed = [json.loads(line[5:]) for line in body.decode().splitlines() if line.startswith("data:") and line[5:].strip()]
            listed = listed or [json.loads(body)]
            tools = {t["name"]: t for m in listed if "result" in m for t in m["result"]["tools"]}
            check(tools.get("test_simple_text", {}).get("execution") == {"taskSupport": "forbidden"},
                  f"a field rmcp does not model passes through over HTTP: {tools.get('test_simple_text')}")

            direct_calls(url)
            stateless_answer(url)
            listening_keeps_session(url)

            # An MCP tier's call longer than the TTL (3 s), its client waiting for the answer in an
            # otherwise idle session: the session is in use, so it lives and the call is answered.
            session = raw_session(url)
            status, _, body = raw(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                        "params": {"name": "slow_until_cancelled", "arguments": {"seconds": 4.5}}},
                                  {"mcp-session-id": session})
            check(status == 200 and any("not cancelled" in json.dumps(m.get("result")) for m in answers(body)),
                  f"an MCP call longer than the TTL, its client waiting, is answered: {status} {body[:300]}")

            # What a well-behaved client never sends: the right status and a JSON-RPC error.
            status, _, body = raw(url, {"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
            check(400 <= status < 500, f"no session id: {status} {body[:200]}")
            status, _, body = raw(url, INIT, {"Origin": "http://evil.example"})
            check(status == 403, f"a foreign Origin: {status} {body[:200]}")
            status, body = oversized(url, 20 * 1024 * 1024)
            check(status == 413 and b"jsonrpc" in body, f"a 20 MB body: {status} {body[:200]}")
            status, _, body = raw(url, b"{not json")
            check(status == 400 and b"-32700" in body, f"invalid JSON: {status} {body[:200]}")
            status, _, body = raw(url, [INIT, INIT])
            check(400 <= status < 500 and b"jsonrpc" in body, f"a batch array: {status} {body[:200]}")
            status, _, body = raw(base + "/healthz", method="GET")
            check(status == 200, "the server is still up")
        finally:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(timeout=20)
            except subprocess.TimeoutExpired:
                gateway.kill()
                raise AssertionError("the gateway did not stop on SIGTERM")
        check(gateway.returncode == 0, f"a clean exit on SIGTERM: {gateway.returncode}")

        # Bearer tokens: 401 with WWW-Authenticate without one, served with one.
        secured = """
[telemetry]
enabled = false
[http]
bearer_tokens_env = "FB_TEST_TOKENS"
header_read_timeout = "1s"
[[tiers]]
name = "local"
workers = { builtin = ["echo"] }
size = 1
"""
        gateway, url = start(secured, directory, {"FB_TEST_TOKENS": "alpha, beta"})
        try:
            status, headers, body = raw(url, INIT)
            check(status == 401 and "Bearer" in (headers.get("www-authenticate") or headers.get("WWW-Authenticate") or ""),
                  f"no token: {status} {headers}")
            status, _, _ = raw(url, INIT, {"Authorization": "Bearer wrong"})
            check(status == 401, f"a wrong token: {status}")
            async with streamable_http_client(url, http_client=create_mcp_http_client(headers={"Authorization": "Bearer beta"})) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    r = await session.call_tool("echo", {"text": "with a token"})
                    check(r.structured_content == {"text": "with a token"}, f"served with a token {r}")
            # Prometheus metrics at /metrics, behind the same tokens.
            base = url.rsplit("/", 1)[0]
            status, _, _ = raw(base + "/metrics", method="GET")
            check(status == 401, f"metrics without a token: {status}")
            status, headers, body = raw(base + "/metrics", method="GET", headers={"Authorization": "Bearer alpha"})
            text = body.decode()
            check(status == 200 and "text/plain" in headers.get("content-type", headers.get("Content-Type", "")),
                  f"metrics: {status} {headers}")
            check('flowbalancer_tier_successes_total{tier="local"} 1' in text, f"the call is counted: {text[:2000]}")
            check("with a token" not in text, "no payload in the metrics")
            # A client that trickles its request head is cut off after header_read_timeout.
            import socket
            from urllib.parse import urlparse
            parts = urlparse(url)
            with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
                sock.sendall(f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\n".encode())
                started = time.monotonic()
                answer = b""
                try:
                    while chunk := sock.recv(4096):
                        answer += chunk
                except OSError:
                    pass
                waited = time.monotonic() - started
            check(0.5 < waited < 5 and (answer == b"" or answer.startswith(b"HTTP/1.1 408")),
                  f"a trickled request head is cut off after 1 s: {waited:.1f}s {answer[:100]}")
            status, _, _ = raw(base + "/healthz", method="GET")
            check(status == 200, f"served after cutting off a slow client: {status}")
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=20)
    print(f"HTTP gateway end to end: {checks} checks passed")


asyncio.run(main())
