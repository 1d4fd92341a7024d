"""bench/classify_batching.py runs end to end with tiny settings (no timing asserted): both ways classify every
session's image, one at a time takes a batch per request, batched fewer."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_classify_batching_bench_tiny(capsys):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_classify_batching", BENCH / "classify_batching.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--sessions", "4", "--rounds", "1", "--layers", "1", "--width", "64", "--image-size", "32"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == result and out[0].startswith("CPU:")
    ways = result["ways"]
    assert ways["one at a time"]["batches_per_burst"] == 4  # each request its own turn
    assert 1 <= ways["batched"]["batches_per_burst"] <= 4
    assert all(way["max_s"] > 0 for way in ways.values())
