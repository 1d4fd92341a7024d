"""bench/lesson_add_memory.py on the tiny stand-in: the zoo loaded through the app's handlers, then step 2's
computations each measured (task arithmetic at one lambda, both merged directions of the sweep, every lambda's score);
only the figures' presence and consistency are asserted, no size or time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lesson_add_memory_on_the_tiny_standin(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "lesson_add_memory.py"), "--zoo",
                           "vit-b-32-standin-tiny", "--standin-dir", str(tmp_path / "standin"), "--threads", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    names = [row["phase"].strip() for row in result["phases"]]
    assert names[0] == "load (app.handlers.load_zoo)" and names[-1] == "sweep (lambda_sweep_view)"
    assert names.count("direction task_arithmetic") == names.count("direction ties") == 1
    assert sum(name.startswith("score lambda") for name in names) == 2 * 11 - 1  # two methods, 0.0 ... 1.0, 0 once
    assert 0.0 <= result["average"] <= 100.0 and result["zoo"] == "vit-b-32-standin-tiny"
    sweep = result["phases"][-1]
    assert sweep["peak_mb"] == max(row["peak_mb"] for row in result["phases"][names.index("task_scores (one lambda)")
                                                                            + 1:])
    assert result["peak_mb"] >= max(row["peak_mb"] for row in result["phases"]) > 0
