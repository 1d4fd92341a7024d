"""A hostile visitor of a public Space, against one launched app (``app.py --served``): what every call answers, how
fast, whether the server logged a traceback for a visitor's mistake, and whether other sessions noticed.

A victim session loads the pocket zoo, merges task arithmetic + WEMoE and adapts WEMoE 2 steps; then the hostile
session sends every case below (server paths as task and checkpoint sources, a zip bomb, a lying zip, a one-class
zip, a 25 MB "image", a text file as an image, words and None in every numeric and checkbox input, too many lambdas,
a merge while its own adaptation runs, a client-side cancel of a long merge). Each call must be answered within
``--deadline`` seconds with a specific message (never gradio's generic "The upstream Gradio app has raised an
exception"). Then ``--crowd`` sessions read a heavy custom task (a valid zip of many images) at once while the victim
classifies an example image: its latency is measured beside them, and alone before.

Printed: one line per case (seconds, answered, the first words of the message), the counts, the victim's
classification latency alone and during the crowd's reads, tracebacks in the server's log, and the victim's state
before and after; as the last line, one JSON object.

    python bench/hostile_visitor.py                 # launches python app.py --served on 127.0.0.1 (a free port)
    python bench/hostile_visitor.py --crowd 2 --crowd-images 200

Only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_server import free_port, launch_app_args, wait_until_answering  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GENERIC = "upstream Gradio app has raised an exception"
SERVER_PATHS = ["/", "../../", "/usr", "/etc", "/proc/self", "/etc/passwd", "/nonexistent/dir", "~", "assets/pocket"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--deadline", type=float, default=5.0, help="seconds a hostile call may take to be answered")
    p.add_argument("--crowd", type=int, default=8, help="sessions reading a heavy custom task at once")
    p.add_argument("--crowd-images", type=int, default=2000, help="images in the crowd's (valid) task zip")
    p.add_argument("--classifications", type=int, default=5, help="victim classifications alone and beside the crowd")
    p.add_argument("--url", default=None, help="a running app started with --served (default: launch one)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------------------
# The files a hostile visitor uploads


def png_bytes(seed: int, size: int = 16) -> bytes:
    """A small PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (seed * 37 % 256, seed * 91 % 256, 120)).save(buffer, "PNG")
    return buffer.getvalue()


def write_files(folder: Path, crowd_images: int) -> dict[str, Path]:
    """The hostile uploads: a 1 GiB zip bomb (about 1 MB), a zip with a bad CRC, a one-class zip, a 25 MB "image", a
    text file named .png, and the crowd's valid zip of ``crowd_images`` small PNGs in two classes."""
    files = {name: folder / name for name in ("bomb.zip", "lying.zip", "oneclass.zip", "huge.jpg", "notes.png",
                                               "crowd.zip")}
    with zipfile.ZipFile(files["bomb.zip"], "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/0.png", png_bytes(0))
        with archive.open("dog/0.png", "w", force_zip64=True) as member:
            chunk = b"\0" * 2**20
            for _ in range(1024):
                member.write(chunk)
    with zipfile.ZipFile(files["lying.zip"], "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("cat/0.png", png_bytes(1))
        archive.writestr("dog/0.png", png_bytes(2))
    data = bytearray(files["lying.zip"].read_bytes())
    data[data.index(png_bytes(2)) + 40] ^= 0xFF  # one byte of the second image changed: its CRC no longer matches
    files["lying.zip"].write_bytes(bytes(data))
    with zipfile.ZipFile(files["oneclass.zip"], "w") as archive:
        for i in range(3):
            archive.writestr(f"cat/{i}.png", png_bytes(i))
    files["huge.jpg"].write_bytes(b"\xff\xd8\xff" + b"\0" * (25 * 2**20))
    files["notes.png"].write_text("not an image")
    with zipfile.ZipFile(files["crowd.zip"], "w") as archive:
        for i in range(crowd_images):
            archive.writestr(f"{('cat', 'dog')[i % 2]}/{i}.png", png_bytes(i, size=32))
    return files


# ---------------------------------------------------------------------------------------------------------------
# Calls


def timed(call) -> tuple[float, bool, str]:
    """(seconds, refused, message) of ``call()``: the message of the refusal or the first output's text."""
    start = time.perf_counter()
    try:
        out = call()
        refused, text = False, str(out[0] if isinstance(out, (tuple, list)) and out else out)
    except Exception as error:  # noqa: BLE001 - a refusal is what most cases expect
        refused, text = True, str(error)
    return time.perf_counter() - start, refused, " ".join(text.split())


def hostile_cases(files: dict[str, Path]) -> list[tuple[str, str, dict[str, Any]]]:
    """(case, api name, arguments) of every call the hostile session sends (files as gradio_client handles)."""
    from gradio_client import handle_file

    cases = [(f"task source {p!r}", "/read_tasks", {"tasks": f"x: {p}"}) for p in SERVER_PATHS]
    cases += [(f"task source hf:{p}", "/read_tasks", {"tasks": f"x: hf:{p}"}) for p in ("../etc", "/etc", "a/..")]
    custom = {"zoo": "custom", "base_model": "ViT-B-32", "base_weights": "openai"}
    cases += [("base weights /etc/passwd", "/load_zoo", {**custom, "base_weights": "/etc/passwd", "experts": "a: x/y"}),
              ("expert /etc/passwd", "/load_zoo", {**custom, "experts": "a: /etc/passwd"}),
              ("expert ~/.ssh", "/load_zoo", {**custom, "experts": "a: ~/.ssh"}),
              ("base model local-dir:/etc", "/load_zoo",
               {**custom, "base_model": "local-dir:/etc", "experts": "a: x/y"})]
    for name in ("bomb.zip", "lying.zip", "oneclass.zip"):
        cases.append((f"task upload {name}", "/read_tasks",
                      {"tasks": "", "task_files": [handle_file(str(files[name]))]}))
    cases += [("25 MB image", "/classify_upload", {"image": handle_file(str(files["huge.jpg"]))}),
              ("text file as image", "/classify_upload", {"image": handle_file(str(files["notes.png"]))}),
              ("text file to routing per patch", "/routing_patches", {"image": handle_file(str(files["notes.png"]))})]
    for value in ("x", None, 1e9):
        cases += [(f"severity {value!r}", "/reclassify_severity", {"corruption": "contrast", "severity": value}),
                  (f"layer {-99 if value is None else value!r}", "/routing_patches",
                   {"layer": -99 if value is None else value}),
                  (f"top_k {value!r}", "/interference", {"top_k": value}),
                  (f"steps {value!r}", "/adapt", {"target": "wemoe", "steps": value}),
                  (f"lambda {value!r}", "/merge", {"methods": ["task_arithmetic"], "task_arithmetic__lambda": value})]
    cases += [("show_all 'x'", "/prediction_view", {"show_all": "x"}),
              ("normalized 'x'", "/accuracy_view", {"normalized": "x"}),
              ("a lambda slider 'x'", "/per_task_lambdas", {"lambdas": ["x"]}),  # the client pads to the 20 sliders
              ("zoo 'x'", "/load_zoo", {"zoo": "../../etc"})]
    return cases


def call_with_lambdas(client, args: dict[str, Any]) -> Any:
    """``/per_task_lambdas`` takes its sliders positionally."""
    return client.predict(*args["lambdas"], api_name="/per_task_lambdas")


def state_of(client) -> str:
    """The victim's merges as its own Cancel reports them (nothing runs: the routers' step count)."""
    return client.predict(target="wemoe", api_name="/cancel")


def classify(client, image: str) -> float:
    """Seconds of one classification of ``image``."""
    from gradio_client import handle_file

    start = time.perf_counter()
    client.predict(image=handle_file(image), api_name="/classify_upload")
    return time.perf_counter() - start


def run(args: argparse.Namespace, url: str, log_path: Path | None) -> dict[str, Any]:
    """Every case against the app at ``url``; the figures."""
    from gradio_client import Client, handle_file

    victim = Client(url, verbose=False)
    victim.predict(zoo="pocket", api_name="/load_zoo")
    victim.predict(methods=["task_arithmetic", "wemoe"], images_per_task=4, api_name="/merge")
    victim.predict(target="wemoe", steps=2, images_per_task=4, api_name="/adapt")
    before = state_of(victim)
    example = str(sorted((ROOT / "assets" / "examples").glob("*/*.png"))[0])
    alone = [classify(victim, example) for _ in range(args.classifications)]

    hostile = Client(url, verbose=False)
    hostile.predict(zoo="pocket", api_name="/load_zoo")
    hostile.predict(methods=["task_arithmetic", "wemoe"], images_per_task=4, api_name="/merge")
    rows = []
    with tempfile.TemporaryDirectory(prefix="hostile-") as folder:
        files = write_files(Path(folder), args.crowd_images)
        for case, api, kwargs in hostile_cases(files):
            call = ((lambda k=kwargs: call_with_lambdas(hostile, k)) if api == "/per_task_lambdas"
                    else (lambda a=api, k=kwargs: hostile.predict(**k, api_name=a)))
            seconds, refused, text = timed(call)
            rows.append({"case": case, "api": api, "seconds": round(seconds, 3), "refused": refused,
                         "message": text[:160]})
        # a merge while the session's own adaptation runs, then Cancel: refused, and Cancel names the adaptation
        adapting = hostile.submit(target="wemoe", steps=200, images_per_task=4, api_name="/adapt")
        time.sleep(2.0)
        seconds, refused, text = timed(lambda: hostile.predict(methods=["task_arithmetic"], api_name="/merge"))
        rows.append({"case": "merge while adapting", "api": "/merge", "seconds": round(seconds, 3), "refused": refused,
                     "message": text[:160]})
        seconds, _, text = timed(lambda: hostile.predict(target="wemoe", api_name="/cancel"))
        rows.append({"case": "cancel while adapting", "api": "/cancel", "seconds": round(seconds, 3),
                     "refused": "adapt" not in text.lower() and "stop" not in text.lower(), "message": text[:160]})
        adapting.result(timeout=300)

        # the crowd: sessions reading a heavy (valid) task at once, the victim classifying beside them
        crowd = [Client(url, verbose=False) for _ in range(args.crowd)]
        reads = [threading.Thread(target=timed, args=(lambda c=c: c.predict(
            tasks="", task_files=[handle_file(str(files["crowd.zip"]))], api_name="/read_tasks"),)) for c in crowd]
        for thread in reads:
            thread.start()
        time.sleep(0.5)
        beside = [classify(victim, example) for _ in range(args.classifications)]
        for thread in reads:
            thread.join()
    after = state_of(victim)
    log = log_path.read_text(errors="replace") if log_path is not None and log_path.exists() else ""
    generic = [r["case"] for r in rows if GENERIC in r["message"]]
    slow = [r["case"] for r in rows if r["seconds"] > args.deadline]
    answered = [r["case"] for r in rows if not r["refused"] and r["case"] != "cancel while adapting"]
    return {"cases": rows, "calls": len(rows), "over_deadline": slow, "generic_messages": generic,
            "not_refused": answered, "tracebacks": log.count("Traceback (most recent call last)"),
            "classify_alone_s": round(statistics.median(alone), 3),
            "classify_beside_crowd_s": {"median": round(statistics.median(beside), 3), "max": round(max(beside), 3)},
            "crowd": args.crowd, "crowd_images": args.crowd_images,
            "victim_before": before, "victim_after": after, "victim_unchanged": before == after,
            "server_up": _answers(url)}


def _answers(url: str) -> bool:
    try:
        wait_until_answering(url, timeout=5)
        return True
    except (TimeoutError, RuntimeError):
        return False


def report(result: dict[str, Any]) -> None:
    """The human-readable lines."""
    for row in result["cases"]:
        mark = "refused " if row["refused"] else "ANSWERED"
        print(f"{row['seconds']:7.2f} s  {mark}  {row['case']:<34} {row['message'][:90]}")
    print(f"{result['calls']} calls: {len(result['over_deadline'])} over the deadline, "
          f"{len(result['generic_messages'])} generic messages, {len(result['not_refused'])} not refused, "
          f"{result['tracebacks']} tracebacks in the log")
    print(f"victim classification: {result['classify_alone_s']} s alone, median "
          f"{result['classify_beside_crowd_s']['median']} s (max {result['classify_beside_crowd_s']['max']} s) beside "
          f"{result['crowd']} sessions reading a {result['crowd_images']}-image task")
    print(f"victim unchanged: {result['victim_unchanged']} ({result['victim_after']}); "
          f"server up: {result['server_up']}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the visit; print the figures and, last, their JSON."""
    args = parse_args(argv)
    process, log_path = None, None
    if args.url is None:
        port = free_port()
        log_path = Path(tempfile.mkdtemp(prefix="hostile-app-")) / "app.log"
        process = launch_app_args(port, log_path, ["--served", "--no-warm"])
        url = f"http://127.0.0.1:{port}/"
        wait_until_answering(url, timeout=120, process=process)
    else:
        url = args.url
    try:
        result = run(args, url, log_path)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    report(result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
