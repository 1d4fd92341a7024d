"""The app's latency, measured as a user meets it: start ``python app.py``, then drive it with ``gradio_client``.

Figures: start-up (process start until the server answers), loading a zoo, merging (WEMoE, no adaptation), and
the time from uploading an image to its predictions + routing heatmap (``/classify_upload``: the first upload, which
also computes the routers' task centroids, and the median of the next ``--uploads``).

Zoos: ``pocket`` (the shipped pocket zoo) and ``b32`` (open_clip ViT-B/32 with random weights and two noisy
experts named after pocket tasks, written as safetensors to a temporary folder and loaded as a custom zoo).
Targets: upload -> predictions + heatmap <= 0.5 s (pocket), <= 2 s (ViT-B/32).

    python bench/app_latency.py                  # both zoos
    python bench/app_latency.py --zoos pocket --uploads 5
    python bench/app_latency.py --zoos pocket --in-process   # the app in this process: no process start-up
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # the benchmarks' shared launcher (app_server.py)

import wemoe  # noqa: E402,F401  (before open_clip)  # isort: skip
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from app_server import free_port  # noqa: E402

B32_TASKS = ("pocket_digits", "pocket_shapes")
AUTO_TASK = "auto (the routers' guess)"  # app/handlers.py AUTO_TASK: the head the routers guess


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoos", default="pocket,b32", help="comma-separated: pocket, b32")
    p.add_argument("--uploads", type=int, default=10, help="timed uploads after the first")
    p.add_argument("--samples", type=int, default=16, help="test images per task the app loads (its --samples)")
    p.add_argument("--threads", type=int, default=2, help="OMP/torch threads of the app process")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--in-process", action="store_true",
                   help="launch the app in this process (start-up is then building and launching it, no imports)")
    return p.parse_args(argv)


def start_app(port: int, samples: int, threads: int, timeout: float) -> tuple[subprocess.Popen, float, object]:
    """Launch ``app.py``; return the process, the seconds until a gradio_client connects, and that client."""
    from gradio_client import Client

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GRADIO_ANALYTICS_ENABLED": "False",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--samples", str(samples)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{process.stderr.read()[-3000:]}")
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False)
            return process, time.perf_counter() - start, client
        except Exception:  # noqa: BLE001  (not listening yet)
            if time.perf_counter() - start > timeout:
                process.kill()
                raise TimeoutError(f"app.py did not answer within {timeout:.0f} s") from None
            time.sleep(0.2)


def start_in_process(samples: int) -> tuple[object, float, object]:
    """Build and launch the app in this process; return the demo, the seconds until a client connects, the client."""
    from gradio_client import Client

    from app import AppConfig, build_demo

    start = time.perf_counter()
    demo = build_demo(AppConfig(samples=samples))
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    client = Client(demo.local_url, verbose=False, analytics_enabled=False)
    return demo, time.perf_counter() - start, client


def write_b32_zoo(folder: Path) -> dict[str, str]:
    """A random ViT-B/32 CLIP (full state dict) and one noisy image tower per task, as safetensors files.

    Returns the app's custom-zoo fields: base model name, base weights path, experts text.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    name = "ViT-B-32"
    clip = open_clip.create_model(name, pretrained=None)
    base = folder / "base.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(base))
    lines = []
    for i, task in enumerate(B32_TASKS):
        generator = torch.Generator().manual_seed(i + 1)
        state = {k: (v + 0.01 * v.std() * torch.randn(v.shape, generator=generator)
                     if v.is_floating_point() and v.numel() > 1 else v.clone()).contiguous()
                 for k, v in clip.visual.state_dict().items()}
        path = folder / f"{task}.safetensors"
        save_file(state, str(path))
        lines.append(f"{task}: {path}")
    return {"base_model": name, "base_weights": str(base), "experts": "\n".join(lines)}


def test_image(folder: Path) -> Path:
    """A 64x64 PNG of random colours (what a user might upload; the content does not matter for latency)."""
    path = folder / "upload.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def measure_zoo(client, zoo: str, folder: Path, args: argparse.Namespace) -> dict:
    """Load ``zoo`` in the running app, merge it with WEMoE, and time uploads through /classify_upload."""
    from gradio_client import handle_file

    fields = {"zoo": zoo}
    if zoo == "b32":
        custom = write_b32_zoo(folder)
        fields = {"zoo": "custom", "base_model": custom["base_model"], "base_weights": custom["base_weights"],
                  "experts": custom["experts"]}
    start = time.perf_counter()
    client.predict(**fields, samples=args.samples, api_name="/load_zoo")
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    client.predict(methods=["wemoe"], images_per_task=16, api_name="/merge")
    merge_s = time.perf_counter() - start
    image = test_image(folder)
    times = []
    for _ in range(1 + args.uploads):
        start = time.perf_counter()
        preview, table, guess, heatmap = client.predict(image=handle_file(str(image)), task=AUTO_TASK,
                                                        api_name="/classify_upload")
        times.append(time.perf_counter() - start)
        if not table or heatmap is None:
            raise RuntimeError(f"/classify_upload returned no predictions or no heatmap for the {zoo} zoo")
    return {"load_s": load_s, "merge_s": merge_s, "upload_first_s": times[0],
            "upload_median_s": statistics.median(times[1:]) if len(times) > 1 else times[0]}


def main(argv: list[str] | None = None) -> dict:
    """Entry point: one app process per zoo (start-up timed each time); prints a summary and one JSON line."""
    args = parse_args(argv)
    result: dict = {"samples": args.samples, "uploads": args.uploads, "threads": args.threads,
                    "in_process": args.in_process}
    targets = {"pocket": 0.5, "b32": 2.0}
    with tempfile.TemporaryDirectory(prefix="app-latency-") as tmp:
        for zoo in [z.strip() for z in args.zoos.split(",") if z.strip()]:
            if args.in_process:
                demo, startup_s, client = start_in_process(args.samples)
                stop = demo.close
            else:
                process, startup_s, client = start_app(free_port(), args.samples, args.threads, args.startup_timeout)

                def stop(process: subprocess.Popen = process) -> None:
                    process.terminate()
                    process.wait(timeout=30)
            try:
                figures = measure_zoo(client, zoo, Path(tmp), args)
            finally:
                client.close()
                stop()
            result[zoo] = {"startup_s": startup_s, **figures}
            target = targets.get(zoo)
            print(f"{zoo}: start-up {startup_s:.1f} s, load zoo {figures['load_s']:.1f} s, "
                  f"merge {figures['merge_s']:.2f} s, "
                  f"upload -> predictions + heatmap {figures['upload_median_s'] * 1000:.0f} ms median "
                  f"(first {figures['upload_first_s'] * 1000:.0f} ms)"
                  + (f", target <= {target * 1000:.0f} ms" if target else ""))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
