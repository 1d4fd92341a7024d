"""The MCP server of ``python app.py``: a real MCP client (the ``mcp`` package, streamable HTTP) lists the stateless
tools alone, every argument described, and gets the pocket zoo's merge-and-evaluate table in one call, equal to the
library's; a bad value is a tool error with the library's message; the page's events stay in the API."""

from __future__ import annotations

import asyncio
import json

import pytest
from gradio.utils import get_function_description

from app import build_demo
from app.mcp_tools import PREFIX
from app.session import AppConfig
from tests.app_support import launched
from wemoe.tools import calls
from wemoe.tools.toolbox import Toolbox

TOOL_NAMES = [tool.__name__ for tool in calls.TOOLS]
TASKS = ["pocket_digits", "pocket_shapes"]


def test_the_tools_are_endpoints_with_every_argument_described(config):
    demo = build_demo(config)
    endpoints = demo.get_api_info()["named_endpoints"]
    assert [e.removeprefix("/" + PREFIX) for e in endpoints if e.startswith("/" + PREFIX)] == TOOL_NAMES
    assert {"/load_zoo", "/merge", "/evaluate", "/interference"} <= set(endpoints)  # the page's, for gradio_client
    by_name = {fn.api_name: fn.fn for fn in demo.fns.values()}
    for name in TOOL_NAMES:
        description, parameters, returns = get_function_description(by_name[PREFIX + name])
        assert description and returns, name
        assert all(parameters.values()), (name, [p for p, text in parameters.items() if not text])
        assert [p["parameter_name"] for p in endpoints[f"/{PREFIX}{name}"]["parameters"]] == list(parameters)


async def _mcp_session(url: str) -> dict:
    """List the tools, call merge_and_evaluate twice (the second from the cache) and once with a bad zoo."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    progress: list[str] = []

    async def report(done: float, total: float | None, message: str | None) -> None:
        progress.append(message or "")

    arguments = {"zoo": "pocket", "methods": ["pretrained", "experts", "task_arithmetic"], "tasks": TASKS,
                 "params": {"task_arithmetic": {"lambda": 0.3}}}
    async with streamable_http_client(url) as (read, write, _), ClientSession(read, write) as session:
        await session.initialize()
        tools = (await session.list_tools()).tools
        first = await session.call_tool("merge_and_evaluate", arguments, progress_callback=report)
        again = await session.call_tool("merge_and_evaluate", arguments)
        bad = await session.call_tool("merge_and_evaluate", {**arguments, "zoo": "/etc"})
        odd = await session.call_tool("merge_and_evaluate", {**arguments, "params": {"ties": {"top_k": 500}}})
    return {"tools": tools, "first": first, "again": again, "bad": bad, "odd": odd, "progress": progress}


@pytest.mark.filterwarnings("ignore:This MCP server includes a tool that has a gr.State input")  # before only_tools
def test_an_mcp_client_gets_the_pocket_table_in_one_call():
    config = AppConfig()  # the app's own zoos: pocket and the presets
    with launched(config, **config.launch_options()) as (demo, client):
        seen = asyncio.run(_mcp_session(demo.local_url.rstrip("/") + "/gradio_api/mcp/"))
        listed = json.loads(client.predict(api_name=f"/{PREFIX}list_zoos"))  # the same tools through gradio_client
    tools = {tool.name: tool for tool in seen["tools"]}
    assert sorted(tools) == sorted(TOOL_NAMES)  # only the stateless tools: no page event
    for tool in tools.values():
        assert tool.description, tool.name
        for argument, schema in tool.inputSchema["properties"].items():
            assert schema.get("description"), f"{tool.name}.{argument} has no description"
    assert not seen["first"].isError, seen["first"].content
    table = json.loads(seen["first"].content[0].text)
    expected = calls.merge_and_evaluate("pocket", ["pretrained", "experts", "task_arithmetic"], tasks=TASKS,
                                        params={"task_arithmetic": {"lambda": 0.3}}, box=Toolbox())
    assert table["tasks"] == TASKS
    for name in ("pretrained", "experts", "task_arithmetic"):
        assert table["methods"][name]["per_task"] == expected["methods"][name]["per_task"], name
        assert table["methods"][name]["average"] == expected["methods"][name]["average"], name
    again = json.loads(seen["again"].content[0].text)
    assert again["methods"]["task_arithmetic"]["from_cache"] is True  # the process's shared result cache
    assert again["methods"]["task_arithmetic"]["per_task"] == table["methods"]["task_arithmetic"]["per_task"]
    assert any("Progress" in message for message in seen["progress"]), seen["progress"]
    assert seen["bad"].isError and "Unknown zoo '/etc'" in seen["bad"].content[0].text
    assert seen["odd"].isError and "not among the methods" in seen["odd"].content[0].text
    assert "Traceback" not in seen["bad"].content[0].text
    assert [z["name"] for z in listed["zoos"]] == list(config.zoos)

