"""FastMCP's own proxy (`fastmcp` 4.x) in front of one stdio MCP server, served over stdio:
the peer of `flowbalancer serve` in the MCP-backend benchmark.

Usage: fastmcp_proxy.py PYTHON SERVER_SCRIPT
"""

import sys

from fastmcp.server import create_proxy

python, script = sys.argv[1], sys.argv[2]
proxy = create_proxy(
    {"mcpServers": {"backend": {"command": python, "args": [script], "transport": "stdio"}}},
    name="fastmcp-proxy",
)

if __name__ == "__main__":
    proxy.run(transport="stdio", show_banner=False)
