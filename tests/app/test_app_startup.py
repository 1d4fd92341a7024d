"""`python app.py` serves the page, and building the app loads no model and no UMAP (start-up stays fast)."""

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_building_the_app_loads_nothing_heavy():
    code = (
        "import sys, wemoe; from app import build_demo; demo = build_demo(); "
        "heavy = [m for m in ('umap', 'wemoe.pocket', 'wemoe.workbench.workbench', 'wemoe.moe.routing') "
        "if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_app_py_serves_the_page(tmp_path):
    port = _free_port()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", "PORT": str(port)}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    try:
        page = None
        deadline = time.monotonic() + 120  # a liveness guard, not a speed check (bench/ numbers are in the report)
        while page is None and time.monotonic() < deadline and server.poll() is None:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
            except OSError:
                time.sleep(0.3)
        assert page is not None, server.stdout.read().decode() if server.poll() is not None else "no answer"
        assert "Merge explorer" in page  # this app's page (its title in the embedded config), not any gradio page
        config = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10).read().decode()
        assert "#task-lambdas" in config  # with its stylesheet (app/style.css), which gradio 6 takes at launch only
    finally:
        server.terminate()
        server.wait(timeout=30)
