"""The bundled example worker: echo, word_count, sleep, fib (and, with --faults, tools that
misbehave on purpose for tests)."""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flowbalancer_worker import BadParams, run, tool  # noqa: E402


@tool(description="Returns the same text")
def echo(text: str) -> dict:
    return {"text": text}


@tool(description="Counts the words of a text")
def word_count(text: str) -> dict:
    return {"words": len(text.split())}


@tool(description="Sleeps for ms milliseconds, reporting progress (shows timeouts, progress and cancellation)")
def sleep(ms: int, ctx=None) -> str:
    if ms < 0:
        raise BadParams("ms must be >= 0")
    started = time.monotonic()
    end = started + ms / 1000.0
    while True:
        now = time.monotonic()
        left = end - now
        if left <= 0:
            return "slept"
        if ctx is not None:
            if ctx.cancelled:
                return "cancelled"
            ctx.progress(round((now - started) * 1000), ms, "sleeping")
        time.sleep(min(left, 0.05))


@tool(description="The n-th Fibonacci number (CPU work, for the cold tier)")
def fib(n: int) -> dict:
    if n < 0 or n > 5000:
        raise BadParams("n must be between 0 and 5000")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return {"n": n, "fib": str(a) if n > 90 else a}


@tool(description="This worker's process id")
def pid() -> int:
    return os.getpid()


if "--faults" in sys.argv:

    @tool(description="Prints to stdout (must not corrupt frames), then answers")
    def stray_print(text: str = "oops") -> str:
        print("a stray print:", text)
        return text

    @tool(description="Kills itself with SIGKILL")
    def suicide() -> None:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    @tool(description="Never answers")
    def hang() -> None:
        time.sleep(3600)

    @tool(description="Writes garbage to the real stdout")
    def garbage() -> None:
        os.write(1, b"\x00\x00\x00\x04nope")
        time.sleep(3600)

    @tool(description="Floods stderr")
    def stderr_flood(lines: int = 10000) -> int:
        for i in range(lines):
            sys.stderr.write("flood line %d %s\n" % (i, "x" * 100))
        sys.stderr.flush()
        return lines

    @tool(description="Raises an exception")
    def explode() -> None:
        raise RuntimeError("kaboom")

    @tool(description="An async tool")
    async def async_echo(text: str) -> str:
        return text

    @tool(description="An async tool that never answers (until cancelled)")
    async def async_hang() -> None:
        import asyncio

        await asyncio.sleep(3600)

    @tool(description="Busy Python loop for `seconds` (interruptible by a cancel)")
    def spin(seconds: float = 3600) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return "spun"

    @tool(description="Reports `steps` progress steps, then answers")
    def progress_steps(steps: int = 3, ctx=None) -> int:
        for i in range(steps):
            ctx.progress(i + 1, steps, "step %d" % (i + 1))
        return steps

    @tool(description="What the call's context says")
    def context_of(ctx=None) -> dict:
        return {
            "session": ctx.session,
            "has_deadline": ctx.deadline is not None,
            "progress_token": ctx.progress_token,
        }

    @tool(description="Forks a grandchild into a session of its own (sleeps 10 min); returns its pid")
    def spawn_orphan() -> int:
        pid = os.fork()
        if pid == 0:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            time.sleep(600)
            os._exit(0)
        return pid

    @tool(description="Returns a string of `size` characters")
    def big_result(size: int) -> str:
        return "x" * size


if __name__ == "__main__":
    run("python-example")
