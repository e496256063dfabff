"""flowbalancer worker library: turn Python functions into pool workers.

Standard library only, Python 3.9+. Copy this one file next to your code, or
``pip install ./workers/python``::

    from flowbalancer_worker import tool, run

    @tool(description="Counts the words of a text")
    def word_count(text: str) -> dict:
        return {"words": len(text.split())}

    @tool
    async def crawl(url: str, ctx=None) -> dict:
        for step in range(3):
            ctx.progress(step, 3, "fetching")   # reaches the caller as MCP progress
            if ctx.cancelled:                   # the caller gave up
                break
        return {"ok": True}

    if __name__ == "__main__":
        run("my-worker")

The worker speaks protocol version 2 (docs/protocol.md): 4-byte big-endian length-prefixed
UTF-8 JSON frames on stdin/stdout. ``run()`` takes the real stdout for frames and points
``sys.stdout`` at stderr, so a stray ``print()`` cannot corrupt the frame stream. Exceptions
become error frames carrying the exception type and a truncated traceback. Functions may be
sync or ``async def``.

Calls run concurrently: ``async def`` tools on one event loop thread, plain functions on a
small thread pool, while the main thread keeps reading, so pings are answered and ``cancel``
is acted on during a long call. A cancelled async tool is cancelled as an asyncio task; a
cancelled sync tool gets an exception raised in its thread at the next Python bytecode, which
cannot interrupt a blocking C call: the pool kills the worker after its grace period then.
A tool that declares a ``ctx`` parameter gets a :class:`Context`.
"""

import json
import os
import struct
import sys
import threading
import time

# Type checkers treat a name TYPE_CHECKING as true; at run time nothing is imported (typing
# costs start-up time).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Union  # noqa: F401

# typing, traceback, asyncio and ctypes are imported only when needed: a worker pays for its
# imports on every start, and together they cost more than the rest of the start-up.

__all__ = [
    "tool",
    "run",
    "Context",
    "ToolError",
    "BadParams",
    "Transient",
    "PROTOCOL_VERSION",
]

PROTOCOL_VERSION = 2
MAX_FRAME = int(os.environ.get("FLOWBALANCER_MAX_FRAME", 16 * 1024 * 1024))
TRACEBACK_LIMIT = 2000
# The most sync calls run at once (threads are started only as calls need them).
MAX_THREADS = 64

_TOOLS = {}


class ToolError(Exception):
    """Raise to fail a call with a chosen kind (default ``handler``)."""

    kind = "handler"

    def __init__(self, message: str, data: "Any" = None) -> None:
        super().__init__(message)
        self.data = data


class BadParams(ToolError):
    """The caller's params are wrong: returned at once, never retried."""

    kind = "bad_params"


class Transient(ToolError):
    """A passing failure: the pool retries the call on another worker."""

    kind = "transient"


class _Cancelled(BaseException):
    """Raised inside a sync tool's thread when its call is cancelled (a BaseException, so that
    a tool's ``except Exception`` does not swallow it)."""


class Context:
    """What a tool knows about its call; declare a parameter named ``ctx`` to get it.

    * ``session``: the caller's session, or None;
    * ``deadline``: the caller's deadline on the ``time.monotonic()`` clock, or None;
    * ``progress_token``: present when the caller listens for progress;
    * ``cancelled``: True once the pool asked to stop this call;
    * ``progress(progress, total=None, message=None)``: reports progress to the caller.
    """

    def __init__(self, call_id: int, meta: "Optional[Dict[str, Any]]", send: "Callable[[Dict[str, Any]], None]") -> None:
        meta = meta if isinstance(meta, dict) else {}
        self.call_id = call_id
        self.session = meta.get("session")
        deadline_ms = meta.get("deadline_ms")
        self.deadline = time.monotonic() + deadline_ms / 1000.0 if isinstance(deadline_ms, (int, float)) else None
        self.progress_token = meta.get("progress_token")
        self._send = send
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def progress(self, progress: float, total: "Optional[float]" = None, message: "Optional[str]" = None) -> None:
        """Reports progress (nothing is sent when the caller does not listen)."""
        if self.progress_token is None:
            return
        frame = {"type": "progress", "id": self.call_id, "progress": float(progress)}
        if total is not None:
            frame["total"] = float(total)
        if message is not None:
            frame["message"] = str(message)
        self._send(frame)


_MISSING = object()
_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _schema_of(annotation):
    """A JSON Schema for a type hint (the common cases; anything else is unconstrained)."""
    if annotation is _MISSING:
        return {}
    if annotation in _SIMPLE:
        return {"type": _SIMPLE[annotation]}
    if annotation in (list, tuple):
        return {"type": "array"}
    if annotation is dict:
        return {"type": "object"}
    import typing

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is typing.Any:
        return {}
    if _union_args(annotation) is not None:  # Optional[X], Union[X, Y], X | Y
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _schema_of(non_none[0])
        return {"anyOf": [_schema_of(a) for a in non_none]}
    if origin in (list, tuple):
        schema = {"type": "array"}
        if args and origin is list:
            schema["items"] = _schema_of(args[0])
        return schema
    if origin is dict:
        return {"type": "object"}
    return {}


def _parameters(function):
    """[(name, default or _MISSING, annotation or _MISSING)] of a plain function's named
    parameters, and whether it takes **kwargs, read from its code object."""
    code = function.__code__
    positional = code.co_varnames[: code.co_posonlyargcount + code.co_argcount][code.co_posonlyargcount :]
    keyword_only = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    defaults = function.__defaults__ or ()
    kw_defaults = function.__kwdefaults__ or {}
    annotations = getattr(function, "__annotations__", {}) or {}
    if any(isinstance(a, str) for a in annotations.values()):
        import typing  # string annotations (from __future__ import annotations)

        try:
            annotations = typing.get_type_hints(function)
        except Exception:  # unresolvable forward references: no types
            annotations = {}
    first_default = len(positional) - len(defaults)
    params = []
    for i, name in enumerate(positional):
        default = defaults[i - first_default] if i >= first_default else _MISSING
        params.append((name, default, annotations.get(name, _MISSING)))
    for name in keyword_only:
        params.append((name, kw_defaults.get(name, _MISSING), annotations.get(name, _MISSING)))
    takes_kwargs = bool(code.co_flags & 0x08)
    return params, takes_kwargs


def _input_schema(function):
    params, _ = _parameters(function)
    params = [p for p in params if p[0] != "ctx"]
    properties = {name: _schema_of(annotation) for name, _, annotation in params}
    required = [name for name, default, _ in params if default is _MISSING]
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


_JSON_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
    "array": "an array",
    "object": "an object",
}


def _json_type(value):
    """The JSON type name of a decoded JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _union_args(annotation):
    """The members of a Union (``Optional[X]``, ``X | Y``), or None for any other hint."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Union or (getattr(types, "UnionType", None) is not None and origin is types.UnionType):
        return typing.get_args(annotation)
    return None


def _accepted(annotation):
    """The JSON types a type hint accepts, or None for any (hints it does not know)."""
    import typing

    if annotation is _MISSING or annotation is typing.Any:
        return None
    if annotation is None:
        return {"null"}
    if annotation in _SIMPLE:
        kind = _SIMPLE[annotation]
        # A JSON number may be written without a fraction; an integer is a number.
        return {"number", "integer"} if kind == "number" else {kind}
    members = _union_args(annotation)
    if members is not None:
        accepted = set()
        for member in members:
            kinds = _accepted(member)
            if kinds is None:
                return None
            accepted |= kinds
        return accepted
    origin = typing.get_origin(annotation) or annotation
    if origin in (list, tuple):
        return {"array"}
    if origin is dict:
        return {"object"}
    return None


def _type_problem(name, accepted, default, value):
    """A message saying why `value` does not fit a parameter that takes the JSON types
    `accepted` (from its hint, by `_accepted`), or None. Only the top-level JSON type is
    checked: the hints that say more are the tool's own business."""
    if accepted is None:
        return None
    kind = _json_type(value)
    if kind in accepted or (value is None and default is None):
        return None
    if kind == "number" and "integer" in accepted and float(value).is_integer():
        return None  # 3.0 is an integer in JSON Schema
    expected = " or ".join(_JSON_NAMES[k] for k in sorted(accepted) if not (k == "integer" and "number" in accepted))
    return "%s must be %s, got %s" % (name, expected, _JSON_NAMES[kind])


def _check_params(entry, params):
    """A message saying why `params` do not fit the tool, or None."""
    known = entry["hints"]
    unknown = [key for key in params if key not in known and not entry["takes_kwargs"]]
    if unknown:
        return "unexpected parameter(s): %s" % ", ".join(sorted(unknown))
    missing = [name for name in entry["required"] if name not in params]
    if missing:
        return "missing required parameter(s): %s" % ", ".join(missing)
    for name, (accepted, default) in entry["hints"].items():
        if name in params:
            problem = _type_problem(name, accepted, default, params[name])
            if problem is not None:
                return problem
    return None


def _integral(entry, params):
    """`params` with integral floats (3.0) given to integer parameters as ints."""
    fixed = None
    for name, (accepted, _) in entry["hints"].items():
        value = params.get(name)
        if not isinstance(value, float):
            continue
        if accepted is not None and "integer" in accepted and "number" not in accepted:
            fixed = fixed if fixed is not None else dict(params)
            fixed[name] = int(value)
    return params if fixed is None else fixed


def tool(name: "Union[str, Callable[..., Any], None]" = None, description: "Optional[str]" = None) -> "Any":
    """Registers a function as a tool; its input schema comes from its type hints."""

    def register(function):
        tool_name = name or function.__name__
        doc = (function.__doc__ or "").strip().splitlines()
        params, takes_kwargs = _parameters(function)
        wants_context = any(p[0] == "ctx" for p in params)
        params = [p for p in params if p[0] != "ctx"]
        _TOOLS[tool_name] = {
            "function": function,
            # The tool's parameters: for each, the JSON types its hint accepts (None: any)
            # and its default.
            "hints": {name: (_accepted(annotation), default) for name, default, annotation in params},
            "required": [name for name, default, _ in params if default is _MISSING],
            "takes_kwargs": takes_kwargs,
            "wants_context": wants_context,
            "is_async": bool(function.__code__.co_flags & 0x80),
            "spec": {
                "name": tool_name,
                "description": description if description is not None else (doc[0] if doc else ""),
                "input_schema": _input_schema(function),
            },
        }
        return function

    if callable(name):  # used as @tool without parentheses
        function, name = name, None
        return register(function)
    return register


class _Channel:
    """Frames in (one reader) and out (any thread: writes are serialised by a lock)."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self._lock = threading.Lock()

    def _read_exactly(self, n):
        chunks = []
        while n > 0:
            chunk = self.reader.read(n)
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read(self):
        prefix = self._read_exactly(4)
        if prefix is None:
            return None
        (length,) = struct.unpack(">I", prefix)
        if length > MAX_FRAME:  # checked before allocating anything
            raise ValueError("frame of %d bytes exceeds the maximum of %d" % (length, MAX_FRAME))
        body = self._read_exactly(length)
        if body is None:
            raise EOFError("stream ended inside a frame")
        return json.loads(body.decode("utf-8"))

    def write(self, message):
        """Writes one frame. An answer too large for a frame is replaced by an error answer."""
        body = _encode(message)
        if len(body) > MAX_FRAME:
            if message.get("type") not in ("result", "error"):
                raise ValueError("a frame of %d bytes exceeds the maximum of %d" % (len(body), MAX_FRAME))
            body = _encode(_error(
                message.get("id"),
                "handler",
                "the result of %d bytes exceeds the maximum frame of %d bytes" % (len(body), MAX_FRAME),
            ))
        frame = struct.pack(">I", len(body)) + body
        with self._lock:
            self.writer.write(frame)
            self.writer.flush()


def _encode(message):
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _error(call_id, kind, message, data=None):
    error = {"kind": kind, "message": message}
    if data is not None:
        error["data"] = data
    return {"type": "error", "id": call_id, "error": error}


def _truncate(text, limit=TRACEBACK_LIMIT):
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n... (%d characters cut) ...\n" % (len(text) - limit) + text[-half:]


def _prepare(message, send):
    """(entry, params, context) for a call, or an error answer."""
    call_id = message.get("id")
    method = message.get("method")
    params = message.get("params")
    entry = _TOOLS.get(method)
    if entry is None:
        return _error(call_id, "unknown_method", "unknown method %r" % (method,))
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return _error(call_id, "bad_params", "params must be a JSON object, got %s" % type(params).__name__)
    problem = _check_params(entry, params)
    if problem is not None:
        return _error(call_id, "bad_params", problem)
    params = _integral(entry, params)
    context = Context(call_id, message.get("meta"), send)
    if entry["wants_context"]:
        params = dict(params, ctx=context)
    return entry, params, context


def _answer(call_id, outcome):
    """The answer frame for a call's result, or for the exception it raised."""
    kind, value = outcome
    if kind == "ok":
        try:
            json.dumps(value)  # must be JSON
        except (TypeError, ValueError) as exc:
            return _error(call_id, "handler", "the result is not JSON: %s" % exc)
        return {"type": "result", "id": call_id, "result": value}
    exc = value
    if isinstance(exc, ToolError):
        return _error(call_id, exc.kind, str(exc), exc.data)
    if kind == "cancelled":
        return _error(call_id, "cancelled", "the call was cancelled")
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    data = {"exception": type(exc).__name__, "traceback": _truncate(text)}
    return _error(call_id, "handler", "%s: %s" % (type(exc).__name__, exc), data)


class _Threads:
    """A small pool of daemon threads for sync tools, grown as calls need it. Knows which
    thread runs which call, so a cancel can raise in the right one."""

    def __init__(self, send):
        import queue

        self._jobs = queue.SimpleQueue()
        self._send = send
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._running = {}  # call id -> thread ident

    def submit(self, call_id, function, params, context):
        with self._lock:
            if self._idle == 0 and self._threads < MAX_THREADS:
                self._threads += 1
                threading.Thread(target=self._main, daemon=True, name="flowbalancer-call").start()
            else:
                self._idle -= 1
        self._jobs.put((call_id, function, params, context))

    def cancel(self, call_id):
        with self._lock:
            ident = self._running.get(call_id)
            if ident is not None:
                import ctypes

                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_Cancelled))

    def _main(self):
        ident = threading.get_ident()
        while True:
            try:
                call_id, function, params, context = self._jobs.get()
                with self._lock:
                    self._running[call_id] = ident
                try:
                    if context.cancelled:
                        raise _Cancelled()
                    outcome = ("ok", function(**params))
                except _Cancelled as exc:
                    outcome = ("cancelled", exc)
                except Exception as exc:
                    outcome = ("error", exc)
                finally:
                    with self._lock:
                        self._running.pop(call_id, None)
                        if context.cancelled:
                            # A cancel may still be pending for this thread: clear it.
                            import ctypes

                            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
                self._send(_answer(call_id, outcome))
                with self._lock:
                    self._idle += 1
            except _Cancelled:
                continue  # a cancel that arrived as its call finished
            except BrokenPipeError:
                return


class _Loop:
    """One asyncio event loop on its own thread, for async tools, started on first use."""

    def __init__(self, send):
        self._send = send
        self._loop = None
        self._tasks = {}  # call id -> concurrent.futures.Future

    def submit(self, call_id, function, params, context):
        import asyncio

        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, daemon=True, name="flowbalancer-loop").start()
        future = asyncio.run_coroutine_threadsafe(function(**params), self._loop)
        self._tasks[call_id] = future
        future.add_done_callback(lambda done: self._done(call_id, done))

    def _done(self, call_id, future):
        self._tasks.pop(call_id, None)
        if future.cancelled():
            outcome = ("cancelled", None)
        else:
            exc = future.exception()
            outcome = ("ok", future.result()) if exc is None else ("error", exc)
        try:
            self._send(_answer(call_id, outcome))
        except BrokenPipeError:
            pass

    def cancel(self, call_id):
        future = self._tasks.get(call_id)
        if future is not None:
            future.cancel()  # thread-safe: cancels the task on the loop


def run(name: "Optional[str]" = None) -> None:
    """Serves the registered tools on stdin/stdout until stdin closes or a shutdown arrives."""
    frames_out = sys.stdout.buffer
    frames_in = sys.stdin.buffer
    # From here on, print() goes to stderr: only frames reach the real stdout.
    sys.stdout = sys.stderr
    channel = _Channel(frames_in, frames_out)
    send = channel.write
    threads = _Threads(send)
    loop = _Loop(send)
    contexts = {}  # call id -> Context, while the call runs

    def forget_when_answered(call_id):
        return lambda frame: (contexts.pop(call_id, None), send(frame))

    send({
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "worker": name or os.path.basename(sys.argv[0] or "python-worker"),
        "tools": [entry["spec"] for entry in _TOOLS.values()],
    })
    try:
        while True:
            try:
                message = channel.read()
            except (ValueError, EOFError) as exc:
                print("flowbalancer_worker: protocol error: %s" % exc, file=sys.stderr)
                sys.exit(2)
            if message is None:
                return
            kind = message.get("type")
            if kind == "call":
                prepared = _prepare(message, send)
                if isinstance(prepared, dict):
                    send(prepared)
                    continue
                entry, params, context = prepared
                call_id = message.get("id")
                contexts[call_id] = context
                if entry["is_async"]:
                    loop.submit(call_id, entry["function"], params, context)
                else:
                    threads.submit(call_id, entry["function"], params, context)
            elif kind == "cancel":
                call_id = message.get("id")
                context = contexts.get(call_id)
                if context is not None:
                    context._cancelled.set()
                    loop.cancel(call_id)
                    threads.cancel(call_id)
            elif kind == "ping":
                send({"type": "pong", "id": message.get("id")})
            elif kind == "shutdown":
                return
            else:
                print("flowbalancer_worker: unexpected message type %r" % (kind,), file=sys.stderr)
                sys.exit(2)
    except BrokenPipeError:
        return
