"""The app's whole pocket flow, timed as a user meets it, through ``gradio_client``: load the pocket zoo, merge task
arithmetic + WEMoE, adapt WEMoE for 300 steps, fill the accuracy table (pretrained, experts, both merges).

Issue target: under 2 minutes on 2 CPU cores. The last line printed is one JSON object.

    python bench/app_flow.py [--steps 300] [--loss im]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import wemoe  # noqa: E402,F401  (first: before torch and open_clip)  # isort: skip
from gradio_client import Client  # noqa: E402

from app.layout import build_demo  # noqa: E402
from app.session import AppConfig  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Launch the app in-process, drive the flow, print the phase times and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--loss", default="im", choices=("entropy", "im"))
    parser.add_argument("--samples", type=int, default=0, help="test images per task (0: all)")
    args = parser.parse_args(argv)
    demo = build_demo(AppConfig(samples=args.samples))
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        client = Client(demo.local_url, verbose=False)
        times = {}
        start = time.perf_counter()
        client.predict(zoo="pocket", samples=args.samples, api_name="/load_zoo")
        times["load_s"] = time.perf_counter() - start
        mark = time.perf_counter()
        client.predict(methods=["task_arithmetic", "wemoe"], images_per_task=16, api_name="/merge")
        times["merge_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        status, _ = client.predict(target="wemoe", steps=args.steps, lr=1e-3, images_per_task=16, loss=args.loss,
                                   api_name="/adapt")
        times["adapt_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        table, *_ = client.predict(oracle=False, api_name="/evaluate")
        times["table_s"] = time.perf_counter() - mark
        times["total_s"] = time.perf_counter() - start
        for row in table["data"]:
            print(f"{row[0]:>16}: average {row[-1]}")
        print(status)
        print(", ".join(f"{k} {v:.1f}" for k, v in times.items()))
        report = {k: round(v, 2) for k, v in times.items()} | {"steps": args.steps, "loss": args.loss}
    finally:
        demo.close()
    print(json.dumps(report))  # after closing: gradio prints a line when it stops the server
    return report


if __name__ == "__main__":
    main()
