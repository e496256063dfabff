"""A stdio MCP server on the `mcp` 2.x package's MCPServer, for the end-to-end tests and the
benchmarks: a few plain tools, a CPU-bound one, and its process id."""

import os

from mcp.server.mcpserver import MCPServer

app = MCPServer("py-tools")


@app.tool()
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


@app.tool()
def shout(text: str) -> str:
    """Upper-cases a text."""
    return text.upper()


@app.tool()
def burn(rounds: int = 20000) -> int:
    """CPU-bound work: sums squares in a loop."""
    total = 0
    for i in range(rounds):
        total += i * i
    return total


@app.tool()
def whoami() -> int:
    """The server's process id."""
    return os.getpid()


if __name__ == "__main__":
    app.run()
