"""End-to-end: `flowbalancer serve` pooling real stdio MCP servers, driven by the official MCP
Python SDK (`mcp` 2.x): @modelcontextprotocol/server-everything (npm) in a 2-instance tier, a
server on the SDK's own MCPServer, mcp-server-time (PyPI) with a tool prefix, and a server
that cannot start. Run by `cargo xtask e2e`.

Usage: python mcp_backends.py path/to/flowbalancer path/to/server-everything/dist/index.js
"""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

try:
    from mcp.shared.exceptions import MCPError as McpError
except ImportError:  # mcp 1.x
    from mcp.shared.exceptions import McpError

BINARY, EVERYTHING = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
checks = 0


def check(condition, message):
    global checks
    if not condition:
        raise AssertionError(message)
    checks += 1


def dump(model):
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HTTP_PORT = free_port()


def config_file(directory):
    path = os.path.join(directory, "gateway.toml")
    python = sys.executable
    with open(path, "w") as f:
        f.write(f"""
# The checks compare listings at once: wait for every server, however slow this machine.
start_wait = "60s"

[telemetry]
enabled = false

[[tiers]]
name = "everything"
workers = {{ mcp = ["node", "{EVERYTHING}", "stdio"] }}
size = 2
cancel_grace = "1s"

[[tiers]]
name = "py"
workers = {{ mcp = ["{python}", "{HERE}/servers/py_tools.py"] }}
size = 1

[[tiers]]
name = "time"
workers = {{ mcp = ["{python}", "-m", "mcp_server_time", "--local-timezone", "UTC"] }}
size = 1
tool_prefix = "time_"

[[tiers]]
name = "stateful"
workers = {{ mcp = ["{python}", "{HERE}/servers/py_tools.py"] }}
size = 1
max_overflow = 2
isolation = "session"
tool_prefix = "own_"

[[tiers]]
name = "remote"
workers = {{ mcp_url = "http://127.0.0.1:{HTTP_PORT}/mcp" }}
size = 2
tool_prefix = "remote_"
headers = {{ "X-Client" = "flowbalancer-e2e ${{USER_FOR_E2E}}" }}

[[tiers]]
name = "broken"
workers = {{ mcp = ["{python}", "{HERE}/servers/broken.py"] }}
size = 1
""")
    return path


def children_of(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def gateway_pid(config):
    out = subprocess.run(["pgrep", "-f", f"serve --config {config}"], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    return pids[0] if pids else None


def everything_pids(gateway):
    pids = []
    for child in children_of(gateway):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if EVERYTHING.encode() in f.read():
                    pids.append(child)
        except OSError:
            pass
    return pids


async def direct_results():
    """What server-everything answers when called directly, to compare with the gateway."""
    params = StdioServerParameters(command="node", args=[EVERYTHING, "stdio"], env=dict(os.environ))
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            structured = await session.call_tool("get-structured-content", {"location": "New York"})
            image = await session.call_tool("get-tiny-image", {})
            bad = await bad_argument(session)
            return {t.name: dump(t) for t in tools.tools}, dump(structured), dump(image), bad


async def bad_argument(session):
    """How a call with an argument of the wrong type is answered: a tool error or a JSON-RPC
    error, with what it says."""
    try:
        r = await session.call_tool("get-sum", {"a": "not a number", "b": 1})
        return ("result", r.is_error, [c.text for c in r.content if c.type == "text"])
    except McpError as e:
        return ("error", e.error.code, e.error.message)


async def main():
    direct_tools, direct_structured, direct_image, direct_bad = await direct_results()
    # server-everything over streamable HTTP, for the mcp_url tier.
    os.environ["USER_FOR_E2E"] = "tester"
    http_server = subprocess.Popen(["node", EVERYTHING, "streamableHttp"], env={**os.environ, "PORT": str(HTTP_PORT)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            import socket
            socket.create_connection(("127.0.0.1", HTTP_PORT), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        await gateway_checks(direct_tools, direct_structured, direct_image, direct_bad)
    finally:
        http_server.kill()
        http_server.wait()
    print(f"MCP backends end to end: {checks} checks passed")


async def gateway_checks(direct_tools, direct_structured, direct_image, direct_bad):
    with tempfile.TemporaryDirectory() as directory:
        config = config_file(directory)
        params = StdioServerParameters(command=BINARY, args=["serve", "--config", config], env=dict(os.environ))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                caps = dump(init)["capabilities"]
                check(caps["tools"].get("listChanged") is True, f"listChanged is advertised: {caps}")
                check("resources" in caps and "prompts" in caps, f"resources and prompts advertised: {caps}")

                listed = await session.list_tools()
                tools = {t.name: dump(t) for t in listed.tools}
                for name, definition in direct_tools.items():
                    check(name in tools, f"server-everything's {name} is listed")
                    check(tools[name] == definition, f"{name}'s definition passes through whole:\n{tools[name]}\n{definition}")
                check({"add", "shout", "burn", "whoami"} <= set(tools), f"the MCPServer tools are listed: {sorted(tools)}")
                check({"time_get_current_time", "time_convert_time"} <= set(tools), f"mcp-server-time's tools, prefixed: {sorted(tools)}")

                r = await session.call_tool("echo", {"message": "héllo"})
                check(r.content[0].text == "Echo: héllo", f"echo {r}")
                r = await session.call_tool("get-sum", {"a": 2, "b": 40})
                check("42" in r.content[0].text, f"get-sum {r}")
                r = await session.call_tool("get-structured-content", {"location": "New York"})
                check(dump(r) == direct_structured, f"structured content identical:\n{dump(r)}\n{direct_structured}")
                r = await session.call_tool("get-tiny-image", {})
                check(dump(r) == direct_image, "image content identical")
                r = await session.call_tool("add", {"a": 2, "b": 3})
                check(r.content[0].text == "5", f"MCPServer add {r}")
                r = await session.call_tool("time_get_current_time", {"timezone": "UTC"})
                check(not r.is_error and "UTC" in r.content[0].text, f"mcp-server-time through its prefix {r}")
                # A streamable-HTTP server (mcp_url): one client session per worker.
                check("remote_echo" in tools and tools["remote_echo"]["description"] == direct_tools["echo"]["description"],
                      f"the HTTP server's tools, prefixed: {sorted(t for t in tools if t.startswith('remote_'))}")
                r = await session.call_tool("remote_echo", {"message": "over HTTP"})
                check(r.content[0].text == "Echo: over HTTP", f"a call to the HTTP server {r}")
                remote_progress = []

                async def on_remote_progress(progress, total, message):
                    remote_progress.append(progress)

                r = await session.call_tool("remote_trigger-long-running-operation", {"duration": 1, "steps": 3},
                                            progress_callback=on_remote_progress)
                check("completed" in r.content[0].text and remote_progress == [1.0, 2.0, 3.0],
                      f"progress from the HTTP server over SSE: {remote_progress}")
                # A bad argument is answered as the server itself answers it, and the tier
                # still serves afterwards.
                bad = await bad_argument(session)
                check(bad == direct_bad and (bad[0] == "error" or bad[1] is True),
                      f"a bad argument is answered as the server answers it: {bad} / {direct_bad}")
                r = await session.call_tool("get-sum", {"a": 2, "b": 40})
                check("42" in r.content[0].text, f"get-sum after a bad argument {r}")

                # Progress of a long operation reaches us with our own token.
                seen = []

                async def on_progress(progress, total, message):
                    seen.append((progress, total))

                r = await session.call_tool("trigger-long-running-operation", {"duration": 1, "steps": 4},
                                            progress_callback=on_progress)
                check("completed" in r.content[0].text, f"long operation {r}")
                check(len(seen) == 4 and seen[-1] == (4.0, 4.0), f"progress delivered: {seen}")

                # A cancelled long operation (the server keeps running it) never ties up the tier.
                with anyio.move_on_after(0.5):
                    await session.call_tool("trigger-long-running-operation", {"duration": 20, "steps": 2})
                started = time.monotonic()
                for _ in range(20):
                    r = await session.call_tool("echo", {"message": "after cancel"})
                    check(r.content[0].text == "Echo: after cancel", f"served after a cancel {r}")
                check(time.monotonic() - started < 5, f"served at once after a cancel ({time.monotonic() - started:.1f}s)")

                # Resources and prompts are listed and read.
                resources = await session.list_resources()
                check(len(resources.resources) > 0, "resources are listed")
                uri = str(resources.resources[0].uri)
                read_back = await session.read_resource(uri)
                check(len(read_back.contents) == 1, f"resource {uri} read")
                templates = await session.list_resource_templates()
                check(len(templates.resource_templates) > 0, "resource templates are listed")
                prompts = await session.list_prompts()
                names = [p.name for p in prompts.prompts]
                check("simple-prompt" in names, f"prompts are listed: {names}")
                prompt = await session.get_prompt("simple-prompt")
                check(len(prompt.messages) > 0, "a prompt is read")

                # isolation = "session": the connection's calls stay on one instance; another
                # session gets an instance of its own.
                mine = [(await session.call_tool("own_whoami", {})).content[0].text for _ in range(5)]
                check(len(set(mine)) == 1, f"one instance for the connection: {mine}")
                other = [(await session.call_tool("own_whoami", {"_session": "other"})).content[0].text for _ in range(5)]
                check(len(set(other)) == 1 and other[0] != mine[0], f"another session, another instance: {mine[0]} / {other}")

                # kill -9 of one instance during 40 concurrent calls: every call is answered.
                gateway = gateway_pid(config)
                check(gateway is not None, "the gateway's pid is found")
                before = everything_pids(gateway)
                check(len(before) == 2, f"two server-everything instances: {before}")
                results = []

                async def one(i):
                    r = await session.call_tool("get-sum", {"a": i, "b": 1})
                    results.append((i, r))

                async with anyio.create_task_group() as group:
                    for i in range(40):
                        group.start_soon(one, i)
                    await anyio.sleep(0.01)
                    os.kill(before[0], signal.SIGKILL)
                check(len(results) == 40, f"40 calls answered: {len(results)}")
                answered = sum(1 for i, r in results if not r.is_error and str(i + 1) in r.content[0].text)
                check(answered == 40, f"every call answered correctly: {answered}/40 "
                      f"{[r.content[0].text for _, r in results if r.is_error][:3]}")
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    now = everything_pids(gateway)
                    if len(now) == 2 and before[0] not in now:
                        break
                    await anyio.sleep(0.1)
                now = everything_pids(gateway)
                check(len(now) == 2 and before[0] not in now, f"the pool is refilled: {before} -> {now}")
                survivors = now + [p for p in children_of(gateway)]
        # The client is gone: nothing of the gateway is left.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in survivors + [gateway]):
            await anyio.sleep(0.1)
        left = [p for p in survivors + [gateway] if os.path.exists(f"/proc/{p}")]
        check(not left, f"no process left after the client disconnected: {left}")


asyncio.run(main())
