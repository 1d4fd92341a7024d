"""One launcher for the benchmarks that talk to a running app: a free port, ``python app.py`` on 127.0.0.1 with its log,
and waiting until it answers (``classroom.py``, ``hostile_visitor.py``, ``app_latency.py``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answering(url: str, timeout: float, process: subprocess.Popen | None = None) -> float:
    """Poll ``url`` until it answers HTTP; returns the seconds waited. Raises if ``process`` exits or on timeout."""
    start = time.perf_counter()
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status < 500:
                    return time.perf_counter() - start
        except (urllib.error.URLError, OSError):
            pass
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.2)


def launch_app(port: int, threads: int | None, log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python app.py --port PORT`` on 127.0.0.1 (``env``: more environment variables), its output going to
    ``log_path``."""
    return launch_app_args(port, log_path, [], threads, env)


def launch_app_args(port: int, log_path: Path, extra: list[str], threads: int | None = None,
                    more_env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python app.py --port PORT --host 127.0.0.1 EXTRA...``, its output going to ``log_path``."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "HF_DATASETS_OFFLINE": "1", **(more_env or {})}
    env.pop("SPACE_ID", None)  # app.py would serve on 0.0.0.0 on a Space
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1",
                                 *extra], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
