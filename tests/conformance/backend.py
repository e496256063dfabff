#!/usr/bin/env python3
"""A stdio MCP server implementing what the official MCP conformance suite's server scenarios
call (the test_* tools, resources, templates, prompts, logging, progress, sampling,
elicitation, completion), standard library only. `cargo xtask conformance` serves it through
`flowbalancer serve --http` and runs the suite against the gateway.

Written for this project from the scenario descriptions; it is not the suite's own reference
server.
"""

import base64
import json
import sys
import threading
import time

# A 1x1 red PNG and a tiny WAV header with no samples.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
    "0000000c4944415408d763f8cfc000000301010018dd8db40000000049454e44ae426082")).decode()
WAV = base64.b64encode(b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"
                       b"@\x1f\x00\x00@\x1f\x00\x00\x01\x00\x08\x00data\x00\x00\x00\x00").decode()

LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
state = {"level": "debug", "next": 1}
subscriptions = set()
cancelled = set()
lock = threading.Lock()
waiting = {}  # our request id -> [event, response]


def send(message):
    line = json.dumps(message) + "\n"
    with lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def result(rid, value):
    send({"jsonrpc": "2.0", "id": rid, "result": value})


def error(rid, code, message):
    send({"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}})


def log(level, data):
    if LEVELS.index(level) >= LEVELS.index(state["level"]):
        send({"jsonrpc": "2.0", "method": "notifications/message",
              "params": {"level": level, "logger": "conformance-backend", "data": data}})


def ask(method, params):
    """Sends the client a request and waits for its answer (result or error object)."""
    with lock:
        rid = f"backend-{state['next']}"
        state["next"] += 1
    event = threading.Event()
    waiting[rid] = [event, None]
    send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    event.wait(30)
    return waiting.pop(rid)[1] or {"error": {"message": "no answer"}}


def text(value):
    return {"content": [{"type": "text", "text": value}]}


SCHEMA_2020 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
    "additionalProperties": False,
}
NO_ARGS = {"type": "object", "properties": {}}
TOOLS = [
    ("test_simple_text", "Returns simple text", NO_ARGS),
    ("test_image_content", "Returns an image", NO_ARGS),
    ("test_audio_content", "Returns audio", NO_ARGS),
    ("test_embedded_resource", "Returns an embedded resource", NO_ARGS),
    ("test_multiple_content_types", "Returns text, an image and a resource", NO_ARGS),
    ("test_tool_with_logging", "Logs three messages while it runs", NO_ARGS),
    ("test_error_handling", "Always fails", NO_ARGS),
    ("test_tool_with_progress", "Reports progress", NO_ARGS),
    ("test_sampling", "Asks the client for sampling",
     {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}),
    ("test_elicitation", "Asks the user for input",
     {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}),
    ("test_elicitation_sep1034_defaults", "Elicitation with defaults", NO_ARGS),
    ("test_elicitation_sep1330_enums", "Elicitation with every enum form", NO_ARGS),
    ("json_schema_2020_12_tool", "Tool with JSON Schema 2020-12 features", SCHEMA_2020),
    ("test_reconnection", "Takes a moment, for SSE polling tests", NO_ARGS),
    ("add_a_tool", "Adds a tool (added_later, or the name given) and says so (end-to-end tests)",
     {"type": "object", "properties": {"name": {"type": "string"}}}),
    ("slow_until_cancelled", "Runs until cancelled (end-to-end tests)",
     {"type": "object", "properties": {"seconds": {"type": "number"}}}),
]


def call_tool(rid, params):
    name = params.get("name")
    args = params.get("arguments") or {}
    token = (params.get("_meta") or {}).get("progressToken")
    if name == "test_simple_text":
        value = text("This is a simple text response for testing.")
    elif name == "test_image_content":
        value = {"content": [{"type": "image", "data": PNG, "mimeType": "image/png"}]}
    elif name == "test_audio_content":
        value = {"content": [{"type": "audio", "data": WAV, "mimeType": "audio/wav"}]}
    elif name == "test_embedded_resource":
        value = {"content": [{"type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain",
            "text": "This is an embedded resource content."}}]}
    elif name == "test_multiple_content_types":
        value = {"content": [
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "test://mixed-content-resource", "mimeType": "application/json",
                                              "text": json.dumps({"test": "data", "value": 123})}}]}
    elif name == "test_tool_with_logging":
        log("info", "Tool execution started")
        time.sleep(0.05)
        log("info", "Tool processing data")
        time.sleep(0.05)
        log("info", "Tool execution completed")
        value = text("Tool with logging executed successfully")
    elif name == "test_error_handling":
        value = {"isError": True, "content": [{"type": "text", "text": "This tool intentionally returns an error for testing"}]}
    elif name == "test_tool_with_progress":
        for step in (0, 50, 100):
            if token is not None:
                send({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": token, "progress": step, "total": 100}})
            if step < 100:
                time.sleep(0.05)
        value = text("Tool with progress executed successfully")
    elif name == "test_sampling":
        answer = ask("sampling/createMessage", {
            "messages": [{"role": "user", "content": {"type": "text", "text": args.get("prompt", "")}}],
            "maxTokens": 100})
        if "error" in answer:
            value = {"isError": True, **text(f"Sampling failed: {answer['error'].get('message')}")}
        else:
            reply = answer.get("result", {}).get("content", {}).get("text", "")
            value = text(f"LLM response: {reply}")
    elif name in ("test_elicitation", "test_elicitation_sep1034_defaults", "test_elicitation_sep1330_enums"):
        if name == "test_elicitation":
            schema = {"type": "object", "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"}},
                "required": ["username", "email"]}
            message = args.get("message", "")
        elif name == "test_elicitation_sep1034_defaults":
            schema = {"type": "object", "properties": {
                "name": {"type": "string", "default": "John Doe"},
                "age": {"type": "integer", "default": 30},
                "score": {"type": "number", "default": 95.5},
                "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
                "verified": {"type": "boolean", "default": True}}}
            message = "Please review and update the form fields with defaults"
        else:
            schema = {"type": "object", "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "oneOf": [
                    {"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"}]},
                "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                               "enumNames": ["Option One", "Option Two", "Option Three"]},
                "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                "titledMulti": {"type": "array", "items": {"anyOf": [
                    {"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"}]}}}}
            message = "Please choose from the enum options"
        answer = ask("elicitation/create", {"message": message, "requestedSchema": schema})
        if "error" in answer:
            value = {"isError": True, **text(f"Elicitation failed: {answer['error'].get('message')}")}
        else:
            got = answer.get("result", {})
            if name == "test_elicitation":
                value = text(f"User response: action={got.get('action')}, content={json.dumps(got.get('content'))}")
            else:
                value = text(f"Elicitation completed: action={got.get('action')}, content={json.dumps(got.get('content'))}")
    elif name == "json_schema_2020_12_tool":
        value = text(f"Received: {json.dumps(args)}")
    elif name == "slow_until_cancelled":
        # For the end-to-end tests: runs until cancelled, and notes the cancellation in the
        # file CANCEL_LOG names.
        end = time.time() + float(args.get("seconds", 30))
        while time.time() < end:
            if rid in cancelled:
                import os
                if os.environ.get("CANCEL_LOG"):
                    with open(os.environ["CANCEL_LOG"], "a") as f:
                        f.write(f"{rid}\n")
                return
            time.sleep(0.01)
        value = text("not cancelled")
    elif name == "add_a_tool":
        # For the end-to-end tests: a new tool appears, and the client is told.
        new_name = args.get("name", "added_later")
        if not any(t[0] == new_name for t in TOOLS):
            TOOLS.append((new_name, "A tool added while serving", NO_ARGS))
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        value = text("added")
    elif name.startswith("added_later"):
        value = text("added later, and served")
    elif name == "test_reconnection":
        time.sleep(0.5)
        value = text("Reconnection test completed")
    else:
        error(rid, -32602, f"Unknown tool: {name}")
        return
    result(rid, value)


RESOURCES = [
    {"uri": "test://static-text", "name": "static-text", "description": "A static text resource", "mimeType": "text/plain"},
    {"uri": "test://static-binary", "name": "static-binary", "description": "A static binary resource", "mimeType": "image/png"},
    {"uri": "test://watched-resource", "name": "watched-resource", "description": "A resource to subscribe to", "mimeType": "text/plain"},
]
TEMPLATES = [{"uriTemplate": "test://template/{id}/data", "name": "template-data",
              "description": "Data for an id", "mimeType": "application/json"}]
PROMPTS = [
    {"name": "test_simple_prompt", "description": "A simple prompt"},
    {"name": "test_prompt_with_arguments", "description": "A prompt with arguments", "arguments": [
        {"name": "arg1", "description": "First test argument", "required": True},
        {"name": "arg2", "description": "Second test argument", "required": True}]},
    {"name": "test_prompt_with_embedded_resource", "description": "A prompt with an embedded resource", "arguments": [
        {"name": "resourceUri", "description": "URI of the resource to embed", "required": True}]},
    {"name": "test_prompt_with_image", "description": "A prompt with an image"},
]


def read_resource(rid, uri):
    if uri == "test://static-text":
        contents = {"uri": uri, "mimeType": "text/plain", "text": "This is the content of the static text resource."}
    elif uri == "test://static-binary":
        contents = {"uri": uri, "mimeType": "image/png", "blob": PNG}
    elif uri == "test://watched-resource":
        contents = {"uri": uri, "mimeType": "text/plain", "text": "Watched resource content."}
    elif uri.startswith("test://template/") and uri.endswith("/data"):
        ident = uri[len("test://template/"):-len("/data")]
        contents = {"uri": uri, "mimeType": "application/json",
                    "text": json.dumps({"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"})}
    else:
        error(rid, -32002, f"Resource not found: {uri}")
        return
    result(rid, {"contents": [contents]})


def get_prompt(rid, name, args):
    if name == "test_simple_prompt":
        messages = [{"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}]
    elif name == "test_prompt_with_arguments":
        messages = [{"role": "user", "content": {"type": "text",
                                                 "text": f"Prompt with arguments: arg1='{args.get('arg1')}', arg2='{args.get('arg2')}'"}}]
    elif name == "test_prompt_with_embedded_resource":
        messages = [
            {"role": "user", "content": {"type": "resource", "resource": {
                "uri": args.get("resourceUri", "test://example-resource"), "mimeType": "text/plain",
                "text": "Embedded resource content for testing."}}},
            {"role": "user", "content": {"type": "text", "text": "Please process the embedded resource above."}}]
    elif name == "test_prompt_with_image":
        messages = [
            {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
            {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}}]
    else:
        error(rid, -32602, f"Unknown prompt: {name}")
        return
    result(rid, {"messages": messages})


def handle(message):
    method = message.get("method")
    rid = message.get("id")
    params = message.get("params") or {}
    if method is None:
        entry = waiting.get(rid)
        if entry:
            entry[1] = message
            entry[0].set()
        return
    if method == "initialize":
        result(rid, {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                     "capabilities": {"tools": {"listChanged": True},
                                      "resources": {"subscribe": True, "listChanged": True},
                                      "prompts": {"listChanged": True}, "logging": {}, "completions": {}},
                     "serverInfo": {"name": "conformance-backend", "version": "1.0.0"}})
    elif method == "ping":
        result(rid, {})
    elif method == "notifications/cancelled":
        cancelled.add(params.get("requestId"))
    elif method == "logging/setLevel":
        if params.get("level") in LEVELS:
            state["level"] = params["level"]
            result(rid, {})
        else:
            error(rid, -32602, f"Unknown level: {params.get('level')}")
    elif method == "tools/list":
        tools = [{"name": n, "description": d, "inputSchema": s} for n, d, s in TOOLS]
        # A field of a newer revision than some clients model: it must pass through.
        tools[0]["execution"] = {"taskSupport": "forbidden"}
        result(rid, {"tools": tools})
    elif method == "tools/call":
        threading.Thread(target=call_tool, args=(rid, params), daemon=True).start()
    elif method == "resources/list":
        result(rid, {"resources": RESOURCES})
    elif method == "resources/templates/list":
        result(rid, {"resourceTemplates": TEMPLATES})
    elif method == "resources/read":
        read_resource(rid, params.get("uri", ""))
    elif method == "resources/subscribe":
        subscriptions.add(params.get("uri"))
        result(rid, {})
    elif method == "resources/unsubscribe":
        subscriptions.discard(params.get("uri"))
        result(rid, {})
    elif method == "prompts/list":
        result(rid, {"prompts": PROMPTS})
    elif method == "prompts/get":
        get_prompt(rid, params.get("name"), params.get("arguments") or {})
    elif method == "completion/complete":
        value = (params.get("argument") or {}).get("value", "")
        words = [w for w in ["paris", "park", "party", "python"] if w.startswith(value)]
        result(rid, {"completion": {"values": words, "total": len(words), "hasMore": False}})
    elif rid is not None:
        error(rid, -32601, f"Method not found: {method}")


for line in sys.stdin:
    line = line.strip()
    if line:
        handle(json.loads(line))
