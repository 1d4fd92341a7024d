"""bench/classroom.py on the tiny stand-in of the paper's ViT-B/32 zoo (bench/standin_zoo.py): the app loads it through
its hub code, offline, as its default zoo; the class runs the lesson with 0 errors and reports ready_s,
restart_ready_s and the GEMM and effective rates (#31). No timing is asserted, only results."""

from __future__ import annotations

import json

from tests.helpers import load_script


def test_classroom_on_the_tiny_standin(capsys, tmp_path):
    result = load_script("classroom").main([
        "--zoo", "vit-b-32-standin-tiny", "--standin-dir", str(tmp_path / "standin"), "--flow", "lesson",
        "--students", "3", "--probes", "0", "--examples", "1", "--ready-timeout", "600"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == result
    assert result["errors"] == 0 and result["hung"] == 0, result["error_messages"]
    assert result["zoo"] == "vit-b-32-standin-tiny"
    assert result["students"] == result["adapted"] == result["tables"] == 3 and result["mismatched_tables"] == 0
    # the lesson ran on the stand-in's eight paper tasks, not the pocket zoo
    assert result["endpoints"]["/lesson_route"]["failed"] == 0
    assert "sun397" in (tmp_path / "standin" / "zoo.json").read_text()
    assert result["ready_s"] > 0
    restarted = load_script("app_readiness").persistent_cache_supported()
    if restarted:
        assert result["restart_ready_s"] > 0 and result["restart_note"] is None
    else:
        assert result["restart_ready_s"] is None and result["restart_note"] == "no persistent cache"
    assert any(line.startswith("restart_ready_s: ") for line in out)
    rates = result["rates"]
    assert result["gemm_gflops"] == rates["gemm_gflops"]["total"] > 0
    assert result["eval_gflops"] > 0 and result["classify_gflops"] > 0 and rates["classify_towers"] == 10
    # the tiny tower's FLOPs from its shapes: 16 patches of 8x8 into 64 wide, 2 blocks of 17 tokens (MLP 256),
    # projection to 32
    per_block = 2 * 17 * 64 * (3 * 64 + 64 + 2 * 256) + 4 * 17 * 17 * 64
    assert rates["flops_per_image"] == (2 * 16 * 3 * 64 * 64 + 2 * per_block + 2 * 64 * 32)
    assert rates["eval_share"] == round(rates["eval_gflops"] / rates["gemm_gflops"]["total"], 3)
