"""The merge explorer: ``python app.py [--port P]`` (or the PORT environment variable; default 7860).

Hugging Face Spaces runs this file. Nothing heavy loads at import: the pocket zoo loads per session when the
user presses 'Load zoo'. Serves on 127.0.0.1 locally, on 0.0.0.0 on Spaces (SPACE_ID is set there).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the `app` package sits next to this file
# Before torch starts its OpenMP threads: idle threads sleep instead of spinning. On a shared CPU (a free Space, a
# busy laptop) spinning threads made an adaptation step 5x slower (3.3 s vs 0.7 s measured with 2 threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Gradio recomputes its usage summary (a pandas table of up to 10,000 past events) after every event by default:
# 3.3 ms of a 29 ms classification on an idle app, and growing with every event a class makes. Every 1000 events.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")

import wemoe  # noqa: F401  (the torchvision shim, before anything imports open_clip)
from app import AppConfig, build_demo  # the package app/, not this file
from app.files import own_gradio_folder
from app.shared import limit_malloc_arenas
from app.style import launch_style
from app.warm import start_warming


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description="The merge explorer (Gradio app).")
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("PORT", os.environ.get("GRADIO_SERVER_PORT", "7860"))))
    parser.add_argument("--host", default=None, help="default: 0.0.0.0 on Hugging Face Spaces, else 127.0.0.1")
    parser.add_argument("--samples", type=int, default=0, help="test images per task (0 = all)")
    parser.add_argument("--zoo", default=os.environ.get("MERGE_EXPLORER_ZOO", "pocket"),
                        help="the page's default zoo (the lesson's, warmed at start): pocket, a preset, or the path of "
                             "a .json zoo spec (default: $MERGE_EXPLORER_ZOO, else pocket)")
    parser.add_argument("--max-image-size", default=None,
                        help="largest image upload, e.g. 20mb (default: $WEMOE_MAX_IMAGE_SIZE or 20mb)")
    parser.add_argument("--max-checkpoint-size", default=None,
                        help="largest checkpoint or task upload, e.g. 8gb, none for no limit (default: "
                             "$WEMOE_MAX_CHECKPOINT_SIZE, else 1gb on Hugging Face Spaces and 8gb elsewhere)")
    parser.add_argument("--served", action="store_true",
                        help="treat visitors as on a public Space even on localhost: uploads and hub ids only, no "
                             "server paths (on a Space, or on any host beyond localhost, this is always on)")
    parser.add_argument("--no-warm", action="store_true",
                        help="do not compute the default lesson in the background at start-up (it fills the shared "
                             "cache so that a class gets it at once)")
    return parser.parse_args(argv)


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def serves_others(host: str) -> bool:
    """Whether an app listening on ``host`` serves others: on a Space, or on any address beyond this machine."""
    return bool(os.environ.get("SPACE_ID")) or host not in LOCAL_HOSTS


def make_config(args: argparse.Namespace, host: str = "127.0.0.1") -> AppConfig:
    """The app's settings from the command line (upload limits left out fall back to AppConfig's defaults); an app
    that serves others takes no server path from its visitors (``wemoe.zoo.source_policy``)."""
    from app.session import zoo_choices
    from wemoe.zoo.source_policy import SourcePolicy

    zoos, default_zoo = zoo_choices(getattr(args, "zoo", "pocket"))
    limits = {"max_image_size": args.max_image_size, "max_checkpoint_size": args.max_checkpoint_size}
    served = serves_others(host) or getattr(args, "served", False)
    return AppConfig(samples=args.samples, sources=SourcePolicy.for_app(served=served), zoos=zoos,
                     default_zoo=default_zoo,
                     **{k: v for k, v in limits.items() if v is not None})


def quiet_logs(level: str) -> None:
    """The app's own loggers (``app``, ``wemoe``) at ``level``; every other library (open_clip's model building,
    httpx's requests, datasets' progress bars) at warnings only: a class's console shows events, not routine."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("app", "wemoe"):
        logging.getLogger(name).setLevel(level)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> None:
    """Build and serve the app (queue on, upload size limited)."""
    args = parse_args(argv)
    quiet_logs(os.environ.get("MERGE_EXPLORER_LOG_LEVEL", "INFO"))
    host = args.host or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    limit_malloc_arenas()  # before the server's threads: freed scratch goes back to few arenas
    config = make_config(args, host)
    own_gradio_folder()  # before the Blocks: files served come from this process's own folder
    demo = build_demo(config)
    config.shared.start_sweeper(idle_seconds=60 * config.idle_minutes)
    if not args.no_warm and os.environ.get("MERGE_EXPLORER_WARM", "1") != "0":
        start_warming(config)
    demo.queue(default_concurrency_limit=4)
    demo.launch(server_name=host, server_port=args.port, **config.launch_options(), **launch_style())


if __name__ == "__main__":
    main()
