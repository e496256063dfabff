"""The peer for the gateway bench: the same echo tool served by the official MCP Python SDK's
own server (FastMCP) over stdio."""

from mcp.server.fastmcp import FastMCP

server = FastMCP("python-echo")


@server.tool()
def echo(text: str) -> dict:
    """Returns the same text."""
    return {"text": text}


if __name__ == "__main__":
    server.run()
