"""The peer for the HTTP gateway bench: the same echo tool served by the official MCP Python
SDK (`mcp` 2.x, MCPServer) over its own streamable HTTP transport.

Usage: mcp_http_echo_server.py PORT
"""

import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("python-echo")


@server.tool()
def echo(text: str) -> dict:
    """Returns the same text."""
    return {"text": text}


if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
