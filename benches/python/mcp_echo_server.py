"""The peer for the gateway bench: the same echo tool served by the official MCP Python SDK's
own server over stdio (`MCPServer` in the SDK 2.x, `FastMCP` in 1.x)."""

try:
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:  # the SDK 1.x
    from mcp.server.fastmcp import FastMCP as Server

server = Server("python-echo")


@server.tool()
def echo(text: str) -> dict:
    """Returns the same text."""
    return {"text": text}


if __name__ == "__main__":
    server.run()
