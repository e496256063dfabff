"""flowbalancer worker library: turn Python functions into pool workers.

Standard library only, Python 3.9+. Copy this one file next to your code::

    from flowbalancer_worker import tool, run

    @tool(description="Counts the words of a text")
    def word_count(text: str) -> dict:
        return {"words": len(text.split())}

    if __name__ == "__main__":
        run("my-worker")

The worker speaks protocol version 1 (docs/protocol.md): 4-byte big-endian length-prefixed
UTF-8 JSON frames on stdin/stdout. ``run()`` takes the real stdout for frames and points
``sys.stdout`` at stderr, so a stray ``print()`` cannot corrupt the frame stream. Exceptions
become error frames carrying the exception type and a truncated traceback. Functions may be
sync or ``async def``.
"""

import json
import os
import struct
import sys

# typing, traceback and asyncio are imported only when needed (no inspect at all): a worker pays for
# its imports on every start, and together they cost more than the rest of the start-up.

__all__ = ["tool", "run", "ToolError", "BadParams", "Transient", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
MAX_FRAME = int(os.environ.get("FLOWBALANCER_MAX_FRAME", 16 * 1024 * 1024))
TRACEBACK_LIMIT = 2000

_TOOLS = {}


class ToolError(Exception):
    """Raise to fail a call with a chosen kind (default ``handler``)."""

    kind = "handler"

    def __init__(self, message, data=None):
        super().__init__(message)
        self.data = data


class BadParams(ToolError):
    """The caller's params are wrong: returned at once, never retried."""

    kind = "bad_params"


class Transient(ToolError):
    """A passing failure: the pool retries the call on another worker."""

    kind = "transient"


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
    if origin is typing.Union:
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
    properties = {name: _schema_of(annotation) for name, _, annotation in params}
    required = [name for name, default, _ in params if default is _MISSING]
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _check_params(entry, params):
    """A message saying why `params` do not fit the tool, or None."""
    known = entry["params"]
    unknown = [key for key in params if key not in known and not entry["takes_kwargs"]]
    if unknown:
        return "unexpected parameter(s): %s" % ", ".join(sorted(unknown))
    missing = [name for name in entry["required"] if name not in params]
    if missing:
        return "missing required parameter(s): %s" % ", ".join(missing)
    return None


def tool(name=None, description=None):
    """Registers a function as a tool; its input schema comes from its type hints."""

    def register(function):
        tool_name = name or function.__name__
        doc = (function.__doc__ or "").strip().splitlines()
        params, takes_kwargs = _parameters(function)
        _TOOLS[tool_name] = {
            "function": function,
            "params": {name for name, _, _ in params},
            "required": [name for name, default, _ in params if default is _MISSING],
            "takes_kwargs": takes_kwargs,
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
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

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
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(body) > MAX_FRAME:
            raise ValueError("answer of %d bytes exceeds the maximum frame of %d" % (len(body), MAX_FRAME))
        self.writer.write(struct.pack(">I", len(body)) + body)
        self.writer.flush()


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


class _LazyLoop:
    """An asyncio event loop created on first use: importing asyncio costs about 40 ms, which
    every worker start would pay even with no async tool."""

    def __init__(self):
        self._loop = None

    def run_until_complete(self, awaitable):
        if self._loop is None:
            import asyncio

            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    def close(self):
        if self._loop is not None:
            self._loop.close()


def _handle_call(message, loop):
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
    function = entry["function"]
    problem = _check_params(entry, params)
    if problem is not None:
        return _error(call_id, "bad_params", problem)
    try:
        result = function(**params)
        if hasattr(result, "__await__"):
            result = loop.run_until_complete(result)
        json.dumps(result)  # must be JSON
        return {"type": "result", "id": call_id, "result": result}
    except ToolError as exc:
        return _error(call_id, exc.kind, str(exc), exc.data)
    except Exception as exc:
        import traceback

        data = {"exception": type(exc).__name__, "traceback": _truncate(traceback.format_exc())}
        return _error(call_id, "handler", "%s: %s" % (type(exc).__name__, exc), data)


def run(name=None):
    """Serves the registered tools on stdin/stdout until stdin closes or a shutdown arrives."""
    frames_out = sys.stdout.buffer
    frames_in = sys.stdin.buffer
    # From here on, print() goes to stderr: only frames reach the real stdout.
    sys.stdout = sys.stderr
    channel = _Channel(frames_in, frames_out)
    loop = _LazyLoop()
    channel.write({
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
                channel.write(_handle_call(message, loop))
            elif kind == "ping":
                channel.write({"type": "pong", "id": message.get("id")})
            elif kind == "shutdown":
                return
            else:
                print("flowbalancer_worker: unexpected message type %r" % (kind,), file=sys.stderr)
                sys.exit(2)
    except BrokenPipeError:
        return
    finally:
        loop.close()
