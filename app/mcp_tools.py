"""The library's stateless tools (``wemoe.tools.calls``) as ``gr.api`` endpoints, and an MCP server that serves only
them.

Each tool is an endpoint ``/tool_<name>`` with the library function's arguments, docstring and type hints (what an
MCP client's tool list shows: every argument described); it returns the library's result as JSON text. The tools share
the page's loaded zoos and result cache (``AppConfig.shared``: the same keys as the page's), so a table an assistant
asks for after a class computed it comes at once, and the other way round. Adaptation steps take the page's compute
slots and let classifications go first (``app.shared.LightFirst``). A bad value is refused with the library's message
(a ``gr.Error``: an MCP tool error, no traceback); a tool names zoos from the app's list only and reads no server path.

``python app.py`` serves them over MCP (``launch(mcp_server=True)``, ``AppConfig.launch_options``): gradio would make
every public endpoint a tool, the page's session events too, which need a browser session's state; :func:`only_tools`
keeps the tools alone in the MCP server's list (the page's events stay in the API for ``gradio_client``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import gradio as gr

from app.errors import refuse
from app.jobs import guard_memory
from app.session import AppConfig, parse_size
from wemoe.errors import WemoeError

log = logging.getLogger(__name__)

PREFIX = "tool_"
"""The tools' endpoints are ``/tool_<name>`` (the page has endpoints named like some views); MCP names them
``<name>``."""
LIGHT_TOOLS = {"list_zoos", "list_methods", "interference"}
"""Tools that compute little: the light queue; the others share the long jobs' queue."""

# the MCP server warns about the page's gr.State inputs before only_tools drops those events from its list
warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input")


def toolbox(config: AppConfig) -> Any:
    """The tools' :class:`~wemoe.tools.toolbox.Toolbox` on the app's zoos, shared zoos and cache, and limits."""
    from app.gpu import adapt_device
    from wemoe.tools.toolbox import Toolbox

    shared = config.shared
    samples = config.samples or None  # what the page loads when its test-images field is left at the default

    def open_bench(zoo: str, progress: Callable[[float, str], None]) -> Any:
        guard_memory(shared)
        return shared.workbench(zoo, samples, config.zoos[zoo][1], progress)[0]

    return Toolbox(zoos=config.zoos, samples=samples, open_bench=open_bench, results=shared.results,
                   pace=lambda steps: paced(shared, steps), device=adapt_device(),
                   image_roots=[gr.utils.get_upload_folder()], served=config.sources.served,
                   max_image_bytes=parse_size(config.max_image_size), max_pixels=config.max_pixels)


def paced(shared: Any, steps: Iterator[Any]) -> Iterator[Any]:
    """An adaptation run's steps as the page takes them: each in one of the compute slots (one per CPU), after any
    classification running now; waiting for another caller's same run takes no slot."""
    waiting = False
    try:
        while True:
            shared.light_first.wait()
            with shared.compute_slots if not waiting else contextlib.nullcontext():
                item = next(steps, None)
            if item is None:
                return
            waiting = not getattr(item, "counts_as_step", True)
            yield item
    finally:
        steps.close()


def endpoint(tool: Callable[..., dict], box: Any) -> Callable[..., str]:
    """``tool`` as an endpoint function: its arguments, docstring and type hints (without ``box`` and ``progress``),
    its result as JSON text, gradio's progress (a step count out of 100, with the message), a library refusal as a
    ``gr.Error`` with its message."""

    @functools.wraps(tool)
    def call(*args: Any, **kwargs: Any) -> str:
        progress = gr.Progress()

        def report(fraction: float, message: str) -> None:
            progress((round(100 * min(max(fraction, 0.0), 1.0)), 100), desc=message)

        try:
            return json.dumps(tool(*args, **kwargs, box=box, progress=report))
        except gr.Error as error:
            log.warning("tool %s refused: %s", tool.__name__, error.message)
            raise
        except WemoeError as error:
            log.warning("tool %s refused: %s", tool.__name__, error)
            raise refuse(str(error)) from None

    signature = inspect.signature(tool)
    shown = [p for p in signature.parameters.values() if p.kind is not p.KEYWORD_ONLY]
    call.__signature__ = signature.replace(parameters=shown, return_annotation=str)  # type: ignore[attr-defined]
    call.__annotations__ = {**{p.name: tool.__annotations__[p.name] for p in shown}, "return": "str"}
    return call


def build_tools(config: AppConfig, light: dict, long: dict) -> list[str]:
    """One ``gr.api`` endpoint per library tool (call inside the Blocks); their endpoint names."""
    from wemoe.tools.calls import TOOLS

    box = toolbox(config)
    names = []
    for tool in TOOLS:
        queue = light if tool.__name__ in LIGHT_TOOLS else long
        gr.api(endpoint(tool, box), api_name=PREFIX + tool.__name__, concurrency_id=queue["concurrency_id"],
               concurrency_limit=queue["concurrency_limit"])
        names.append(PREFIX + tool.__name__)
    return names


def only_tools(blocks: gr.Blocks) -> list[str]:
    """Keep only the tools' endpoints in ``blocks``' MCP server (when it has one); the tool names it serves."""
    server = getattr(blocks, "mcp_server_obj", None)
    if server is None:
        return []
    server.tool_to_endpoint = {tool: name for tool, name in server.tool_to_endpoint.items()
                               if name.lstrip("/").startswith(PREFIX)}
    return list(server.tool_to_endpoint)


@contextlib.asynccontextmanager
async def tools_only_lifespan(app: Any) -> AsyncIterator[None]:
    """The app's lifespan (``launch(app_kwargs={"lifespan": ...})``): before the server answers anything, its MCP
    server lists the tools alone (:func:`only_tools`)."""
    served = only_tools(app.get_blocks())
    if served:
        log.debug("MCP tools: %s", ", ".join(served))
    yield
