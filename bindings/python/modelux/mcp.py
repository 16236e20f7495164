"""MCP over stdio for a running modelux proxy, built on the official MCP SDK (PyPI ``mcp``)::

    python -m modelux.mcp --url http://127.0.0.1:8080 --key mlx-...    # or MODELUX_API_KEY

An MCP client (Claude Desktop, Claude Code, the inspector) starts this as a subprocess. It is an
SDK stdio server whose tools and resources are the proxy's own: each list, call and read is
forwarded, with the key, to the proxy's streamable-HTTP endpoint (``URL/mcp``) through the SDK's
client. So the tools are the ones the proxy generates from its OpenAPI document, a viewer key
sees the read tools only, and every call meets the REST role checks (see docs/mcp.md). The SDK
also lets clients of the newer protocol revisions talk to it.

Needs ``pip install mcp`` (or ``modelux[mcp]``; not a dependency of the modelux package itself).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional, Sequence


def _endpoint(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/mcp") else url + "/mcp"


def build_server(url: str, key: Optional[str]) -> Any:
    """The SDK server (``mcp.server.lowlevel.Server``) relaying to the proxy at ``url``."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.lowlevel import Server

    headers = {"authorization": f"Bearer {key}"} if key else {}

    @asynccontextmanager
    async def upstream(_: Any) -> AsyncIterator[ClientSession]:
        # One session with the proxy for the whole stdio connection, opened before the first
        # request is served (a wrong URL or key fails the start, with the reason on stderr).
        async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http:
            async with streamable_http_client(_endpoint(url), http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    yield session

    async def list_tools(ctx: Any, params: Any) -> Any:
        return await ctx.lifespan_context.list_tools(params=params)

    async def call_tool(ctx: Any, params: Any) -> Any:
        return await ctx.lifespan_context.call_tool(params.name, params.arguments or {})

    async def list_resources(ctx: Any, params: Any) -> Any:
        return await ctx.lifespan_context.list_resources(params=params)

    async def list_resource_templates(ctx: Any, params: Any) -> Any:
        return await ctx.lifespan_context.list_resource_templates(params=params)

    async def read_resource(ctx: Any, params: Any) -> Any:
        return await ctx.lifespan_context.read_resource(str(params.uri))

    return Server(
        "modelux",
        title="modelux LLM proxy",
        instructions="modelux's admin REST API as tools (configs, versions, diff, rollback, traces, budgets and spend, "
        "health, keys, webhooks, audit), relayed to the proxy at " + _endpoint(url) + ".",
        lifespan=upstream,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_resource_templates,
        on_read_resource=read_resource,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelux.mcp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the modelux proxy (its /mcp endpoint is used)")
    parser.add_argument("--key", default=None, help="modelux API key (default: $MODELUX_API_KEY)")
    args = parser.parse_args(argv)
    try:
        import anyio
        from mcp.server.stdio import stdio_server
    except ImportError:
        print("modelux.mcp needs the MCP SDK: pip install mcp", file=sys.stderr)
        return 2
    server = build_server(args.url, args.key or os.environ.get("MODELUX_API_KEY"))

    async def serve() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
