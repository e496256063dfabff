"""Tests of flowbalancer_worker.py, speaking the protocol to a real worker process."""

import json
import os
import struct
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import flowbalancer_worker as fw  # noqa: E402

EXAMPLE = os.path.join(ROOT, "examples", "basic_worker.py")


def frame(message):
    body = json.dumps(message).encode("utf-8")
    return struct.pack(">I", len(body)) + body


class Worker:
    def __init__(self, *args, env=None):
        self.process = subprocess.Popen(
            [sys.executable, EXAMPLE, "--faults", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def send_raw(self, data):
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker refused and exited: the test checks its exit status

    def send(self, message):
        self.send_raw(frame(message))

    def read(self):
        prefix = self.process.stdout.read(4)
        if len(prefix) < 4:
            return None
        (length,) = struct.unpack(">I", prefix)
        return json.loads(self.process.stdout.read(length))

    def close(self):
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except BrokenPipeError:
                pass


class ProtocolTest(unittest.TestCase):
    def setUp(self):
        self.worker = Worker()
        self.hello = self.worker.read()

    def tearDown(self):
        self.worker.close()

    def call(self, method, params, call_id=1):
        self.worker.send({"type": "call", "id": call_id, "method": method, "params": params, "meta": {}})
        return self.worker.read()

    def test_hello_lists_tools_with_schemas_from_type_hints(self):
        self.assertEqual(self.hello["type"], "hello")
        self.assertEqual(self.hello["protocol"], 2)
        self.assertNotIn("ctx", tools_of(self.hello)["progress_steps"]["input_schema"]["properties"])
        tools = {t["name"]: t for t in self.hello["tools"]}
        self.assertEqual(
            tools["word_count"]["input_schema"],
            {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        )
        self.assertEqual(tools["stderr_flood"]["input_schema"]["properties"]["lines"], {"type": "integer"})
        self.assertNotIn("required", tools["stderr_flood"]["input_schema"])

    def test_results_errors_and_ping(self):
        self.assertEqual(self.call("echo", {"text": "hé"}), {"type": "result", "id": 1, "result": {"text": "hé"}})
        missing = self.call("echo", {}, 2)
        self.assertEqual((missing["type"], missing["error"]["kind"]), ("error", "bad_params"))
        unknown = self.call("nope", {}, 3)
        self.assertEqual(unknown["error"]["kind"], "unknown_method")
        boom = self.call("explode", {}, 4)
        self.assertEqual(boom["error"]["kind"], "handler")
        self.assertEqual(boom["error"]["data"]["exception"], "RuntimeError")
        self.assertIn("kaboom", boom["error"]["data"]["traceback"])
        self.assertEqual(self.call("sleep", {"ms": -1}, 5)["error"]["kind"], "bad_params")
        not_object = self.call("echo", ["a"], 6)
        self.assertEqual(not_object["error"]["kind"], "bad_params")
        self.worker.send({"type": "ping", "id": 7})
        self.assertEqual(self.worker.read(), {"type": "pong", "id": 7})

    def test_arguments_of_the_wrong_json_type_are_bad_params_not_handler_crashes(self):
        wrong = self.call("word_count", {"text": None})
        self.assertEqual(wrong["error"]["kind"], "bad_params", wrong)
        self.assertEqual(wrong["error"]["message"], "text must be a string, got null")
        self.assertNotIn("data", wrong["error"])  # no traceback: the handler never ran
        wrong = self.call("fib", {"n": "10"}, 2)
        self.assertEqual(wrong["error"]["message"], "n must be an integer, got a string")
        self.assertEqual(self.call("fib", {"n": True}, 3)["error"]["kind"], "bad_params")
        # JSON Schema counts 3.0 as an integer: the handler gets 3.
        self.assertEqual(self.call("fib", {"n": 10.0}, 4)["result"], self.call("fib", {"n": 10}, 5)["result"])
        self.assertEqual(self.call("fib", {"n": 10.5}, 6)["error"]["kind"], "bad_params")
        # A float parameter takes integers; a parameter without a hint takes anything.
        self.assertEqual(self.call("spin", {"seconds": "1"}, 7)["error"]["message"],
                         "seconds must be a number, got a string")


    def test_a_stray_print_goes_to_stderr(self):
        self.assertEqual(self.call("stray_print", {"text": "hi"})["result"], "hi")
        self.assertEqual(self.call("echo", {"text": "after"}, 2)["result"], {"text": "after"})
        self.worker.send({"type": "shutdown"})
        self.assertEqual(self.worker.process.wait(timeout=5), 0)
        self.assertIn(b"a stray print: hi", self.worker.process.stderr.read())

    def test_async_tools(self):
        self.assertEqual(self.call("async_echo", {"text": "x"})["result"], "x")

    def test_shutdown_exits_zero(self):
        self.worker.send({"type": "shutdown"})
        self.assertEqual(self.worker.process.wait(timeout=5), 0)


def tools_of(hello):
    return {t["name"]: t for t in hello["tools"]}


class ConcurrencyTest(unittest.TestCase):
    """Protocol v2: calls run concurrently, pings are answered during a call, cancel stops a
    call, progress reaches the pool."""

    def setUp(self):
        self.worker = Worker()
        self.worker.read()  # hello

    def tearDown(self):
        self.worker.close()

    def send_call(self, call_id, method, params, meta=None):
        self.worker.send({"type": "call", "id": call_id, "method": method, "params": params, "meta": meta or {}})

    def test_a_ping_is_answered_while_a_call_runs(self):
        self.send_call(1, "sleep", {"ms": 400})
        self.worker.send({"type": "ping", "id": 2})
        self.assertEqual(self.worker.read(), {"type": "pong", "id": 2})
        self.assertEqual(self.worker.read(), {"type": "result", "id": 1, "result": "slept"})

    def test_a_short_call_overtakes_a_long_one(self):
        self.send_call(1, "sleep", {"ms": 400})
        self.send_call(2, "echo", {"text": "quick"})
        self.assertEqual(self.worker.read()["id"], 2)
        self.assertEqual(self.worker.read()["id"], 1)

    def assert_cancelled(self, method, params):
        self.send_call(1, method, params)
        self.worker.send({"type": "ping", "id": 2})
        self.assertEqual(self.worker.read()["type"], "pong")  # the call is running
        self.worker.send({"type": "cancel", "id": 1})
        answer = self.worker.read()
        self.assertEqual((answer["type"], answer["id"]), ("error", 1), answer)
        self.assertEqual(answer["error"]["kind"], "cancelled")
        # The worker goes on serving.
        self.send_call(3, "echo", {"text": "after"})
        self.assertEqual(self.worker.read()["result"], {"text": "after"})

    def test_cancel_stops_an_async_tool(self):
        self.assert_cancelled("async_hang", {})

    def test_cancel_interrupts_a_busy_sync_tool(self):
        self.assert_cancelled("spin", {})

    def test_cancel_is_seen_by_a_cooperative_tool(self):
        self.send_call(1, "sleep", {"ms": 60000})
        self.worker.send({"type": "ping", "id": 2})
        self.assertEqual(self.worker.read()["type"], "pong")
        self.worker.send({"type": "cancel", "id": 1})
        answer = self.worker.read()
        # Either the tool saw ctx.cancelled and returned, or the cancel interrupted it.
        self.assertEqual(answer["id"], 1)
        self.assertTrue(answer.get("result") == "cancelled" or answer["error"]["kind"] == "cancelled", answer)

    def test_a_cancel_for_a_finished_call_is_ignored(self):
        self.send_call(1, "echo", {"text": "x"})
        self.assertEqual(self.worker.read()["id"], 1)
        self.worker.send({"type": "cancel", "id": 1})
        self.worker.send({"type": "ping", "id": 2})
        self.assertEqual(self.worker.read(), {"type": "pong", "id": 2})

    def test_progress_reaches_the_pool_when_asked_for(self):
        self.send_call(1, "progress_steps", {"steps": 2}, {"progress_token": "tok"})
        first, second, result = self.worker.read(), self.worker.read(), self.worker.read()
        self.assertEqual(first, {"type": "progress", "id": 1, "progress": 1.0, "total": 2.0, "message": "step 1"})
        self.assertEqual(second["progress"], 2.0)
        self.assertEqual(result, {"type": "result", "id": 1, "result": 2})
        # Without a token, no progress frames.
        self.send_call(2, "progress_steps", {"steps": 2})
        self.assertEqual(self.worker.read(), {"type": "result", "id": 2, "result": 2})

    def test_the_context_carries_the_meta(self):
        self.send_call(1, "context_of", {}, {"session": "s1", "deadline_ms": 5000, "progress_token": 7})
        self.assertEqual(
            self.worker.read()["result"],
            {"session": "s1", "has_deadline": True, "progress_token": 7},
        )


class LimitsTest(unittest.TestCase):
    def test_a_result_larger_than_a_frame_is_an_error_answer(self):
        env = dict(os.environ, FLOWBALANCER_MAX_FRAME="8192")
        worker = Worker(env=env)
        try:
            worker.read()  # hello
            worker.send({"type": "call", "id": 1, "method": "big_result", "params": {"size": 20000}, "meta": {}})
            answer = worker.read()
            self.assertEqual((answer["type"], answer["error"]["kind"]), ("error", "handler"))
            self.assertIn("exceeds the maximum frame", answer["error"]["message"])
            worker.send({"type": "ping", "id": 2})
            self.assertEqual(worker.read(), {"type": "pong", "id": 2})
        finally:
            worker.close()

    def test_an_oversized_length_prefix_is_refused_before_allocating(self):
        worker = Worker()
        try:
            worker.read()  # hello
            worker.send_raw(b"\xff\xff\xff\xff")
            self.assertEqual(worker.process.wait(timeout=5), 2)
            self.assertIn(b"exceeds the maximum", worker.process.stderr.read())
        finally:
            worker.close()

    def test_the_maximum_comes_from_the_environment(self):
        env = dict(os.environ, FLOWBALANCER_MAX_FRAME="8192")
        worker = Worker(env=env)
        try:
            self.assertEqual(worker.read()["type"], "hello")
            worker.send({"type": "call", "id": 1, "method": "echo", "params": {"text": "x" * 10000}, "meta": {}})
            self.assertEqual(worker.process.wait(timeout=5), 2)
        finally:
            worker.close()


class SchemaTest(unittest.TestCase):
    def test_optional_and_nested_hints(self):
        from typing import List, Optional

        def f(a: int, b: Optional[str] = None, c: List[float] = (), d: dict = None, e=1):
            return a

        schema = fw._input_schema(f)
        self.assertEqual(schema["required"], ["a"])
        self.assertEqual(schema["properties"]["b"], {"type": "string"})
        self.assertEqual(schema["properties"]["c"], {"type": "array", "items": {"type": "number"}})
        self.assertEqual(schema["properties"]["d"], {"type": "object"})
        self.assertEqual(schema["properties"]["e"], {})
        if sys.version_info >= (3, 10):
            self.assertEqual(fw._schema_of(eval("int | None")), {"type": "integer"})


class TypeHintTest(unittest.TestCase):
    def test_what_each_hint_accepts(self):
        import typing

        def problem(annotation, value, default=fw._MISSING):
            return fw._type_problem("x", fw._accepted(annotation), default, value)

        self.assertIsNone(problem(typing.Optional[str], None))
        self.assertIsNone(problem(str, None, default=None))  # def f(x: str = None)
        self.assertEqual(problem(str, None), "x must be a string, got null")
        self.assertIsNone(problem(typing.Union[int, str], "a"))
        self.assertEqual(problem(typing.Union[int, str], []), "x must be an integer or a string, got an array")
        self.assertIsNone(problem(typing.List[int], [1, "not checked inside"]))
        self.assertEqual(problem(typing.Dict[str, int], [1]), "x must be an object, got an array")
        self.assertIsNone(problem(typing.Any, object()))
        self.assertIsNone(problem(fw._MISSING, 1))
        self.assertIsNone(problem(typing.Optional[typing.Any], 1))
        self.assertEqual(problem(bool, 1), "x must be a boolean, got an integer")
        if sys.version_info >= (3, 10):
            self.assertIsNone(problem(eval("int | None"), None))
            self.assertEqual(problem(eval("int | None"), "a"), "x must be an integer or null, got a string")


if __name__ == "__main__":
    unittest.main()
