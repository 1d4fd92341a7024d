"""A class's burst of classifications on a ViT-B/32-shaped zoo, one at a time against batched across sessions.

``S`` sessions share one loaded zoo and result cache (as the app's students do), all merged with task arithmetic at
the same lambda; each classifies a new image of its own at the same moment, with what the page shows (the merged model
and the expert of the image's task). Two ways, interleaved round by round on fresh images (no cache hit):
``one at a time`` (each request its own turn: ``ClassifyBatcher.max_images = 1``, the behaviour before batching) and
``batched`` (requests that wait for the turn go in one batch, ``wemoe.workbench.classify_batching``). Printed per way:
the burst's wall seconds, each request's p50 / p95 / max seconds, batches per burst; the last line is one JSON object.

The zoo is open_clip's ViT-B/32 image tower with random weights (``merge_speed.random_zoo``), a one-layer text tower
for the heads, ``--tasks`` experts, ten classes per task.

    python bench/classify_batching.py                       # 16 sessions, 3 rounds, ViT-B/32
    python bench/classify_batching.py --sessions 4 --rounds 1 --layers 1 --width 64   # tiny (the test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import wemoe  # noqa: E402,F401  (before open_clip: the torchvision compatibility step)  # isort: skip
import datasets  # noqa: E402
import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dense_baseline import cpu_model  # noqa: E402
from merge_speed import random_zoo  # noqa: E402
from wemoe.tasks.registry import Task  # noqa: E402
from wemoe.workbench.result_cache import ResultCache  # noqa: E402
from wemoe.workbench.workbench import Workbench  # noqa: E402

WAYS = ("one at a time", "batched")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; the defaults are 16 sessions on ViT-B/32 with 4 experts, 2 threads."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=16, help="students classifying at the same moment")
    p.add_argument("--rounds", type=int, default=3, help="bursts per way (interleaved)")
    p.add_argument("--tasks", type=int, default=4, help="experts (tasks) in the zoo")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    return p.parse_args(argv)


def _task(name: str, seed: int) -> Task:
    """A task of ten classes whose test split is four random images (the heads need only its class names)."""
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    classnames = tuple(f"{name} class {i}" for i in range(10))
    data = datasets.Dataset.from_dict(
        {"image": images, "label": list(range(4))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(classnames))}))
    return Task(name=name, classnames=classnames, templates=("a photo of a {c}.",), load_split=lambda split: data)


def _images(count: int, seed: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def burst(sessions: list[Workbench], images: list[Image.Image]) -> dict:
    """Every session classifies its image at once (task0's head, what the page shows): wall and per-request
    seconds."""
    seconds: list[float] = [0.0] * len(sessions)
    errors: list[BaseException] = []
    go = threading.Barrier(len(sessions))

    def run(i: int) -> None:
        go.wait()
        start = time.perf_counter()
        try:
            sessions[i].classify([images[i]], task="task0", models="shown")
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)
        seconds[i] = time.perf_counter() - start

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sessions))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {"wall_s": time.perf_counter() - start, "requests_s": seconds}


def main(argv: list[str] | None = None) -> dict:
    """Build the zoo and the sessions, run the interleaved bursts, print a table and (last) the JSON result."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    zoo = random_zoo(args.layers, args.width, 32 if args.image_size >= 64 else 16, args.image_size, args.tasks,
                     0.01, seed=0)
    zoo.preprocess = open_clip.image_transform(args.image_size, is_train=False)
    zoo.tokenizer = open_clip.get_tokenizer("ViT-B-32")
    tasks = [_task(name, i) for i, name in enumerate(zoo.task_names)]
    loaded, cache = Workbench(zoo, tasks).loaded, ResultCache()
    sessions = [Workbench.sharing(loaded, cache, "bench") for _ in range(args.sessions)]
    for session in sessions:
        session.merge("task_arithmetic")  # one merge, shared through the cache
    sessions[0].classify(_images(1, 999, args.image_size), task="task0", models="shown")  # heads, warm-up
    batcher = loaded.classify_batcher
    found = {way: {"wall_s": [], "requests_s": [], "batches": []} for way in WAYS}
    for round_ in range(args.rounds):
        for w, way in enumerate(WAYS):
            batcher.max_images = 1 if way == "one at a time" else 32
            before = batcher.batches
            measured = burst(sessions, _images(args.sessions, 1000 * round_ + w, args.image_size))
            found[way]["wall_s"].append(measured["wall_s"])
            found[way]["requests_s"].extend(measured["requests_s"])
            found[way]["batches"].append(batcher.batches - before)
    cpu = cpu_model()
    print(f"CPU: {cpu} ({args.threads} threads); {args.sessions} sessions, {args.rounds} rounds, "
          f"{args.layers} blocks of width {args.width}, {args.tasks} experts")
    summary = {}
    for way, values in found.items():
        requests = sorted(values["requests_s"])
        summary[way] = {
            "wall_s": round(statistics.median(values["wall_s"]), 3),
            "p50_s": round(statistics.median(requests), 3),
            "p95_s": round(requests[min(len(requests) - 1, int(0.95 * len(requests)))], 3),
            "max_s": round(requests[-1], 3),
            "batches_per_burst": round(statistics.mean(values["batches"]), 1),
        }
        row = summary[way]
        print(f"{way:14s} burst {row['wall_s']:7.2f} s  request p50 {row['p50_s']:6.2f} s  p95 {row['p95_s']:6.2f} s  "
              f"max {row['max_s']:6.2f} s  batches per burst {row['batches_per_burst']}")
    ratio = summary["one at a time"]["wall_s"] / max(summary["batched"]["wall_s"], 1e-9)
    print(f"batched: the burst {ratio:.2f}x faster")
    result = {"cpu": cpu, "threads": args.threads, "torch": torch.__version__, "sessions": args.sessions,
              "rounds": args.rounds, "zoo": {"layers": args.layers, "width": args.width, "tasks": args.tasks,
                                              "image_size": args.image_size},
              "ways": summary, "burst_speedup": round(ratio, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
