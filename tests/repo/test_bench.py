"""The benchmark scripts under bench/ run end to end with tiny settings (no timing is asserted, only results)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
FUSIONBENCH_PYTHON = BENCH / ".venv-fusionbench" / "bin" / "python"
TINY = ["--layers", "2", "--width", "64", "--image-size", "32", "--patch-size", "16", "--experts", "3",
        "--batch", "2", "--runs", "1", "--warmup", "0"]


def test_moe_bench_ours_vs_dense_tiny(capsys):
    bench = load_script("moe_vs_fusionbench")
    result = bench.main([*TINY, "--no-fusionbench", "--no-memory"])
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last_line) == result
    for key in ("fwd_ms_dense", "fwd_ms_ours", "fwdbwd_ms_dense", "fwdbwd_ms_ours"):
        assert result[key] > 0
    # The routers got random weights, so WEMoE must differ from task arithmetic (else the bench measures nothing).
    assert result["max_abs_diff_ours_dense"] > 1e-6
    # Ours holds the dense tower + the stacked MLP task vectors + routers, and nothing else of that size.
    assert 1.0 < result["model_memory_ratio"] < 1.15
    # ours (fused kernel where it builds) and ours_torch_ops are one model through two code paths: same outputs.
    assert result["fwd_ms_ours_torch_ops"] > 0
    assert result["max_abs_diff_ours_torch_ops"] <= 1e-5


def test_moe_bench_memory_probe_sees_the_kept_activations():
    bench = load_script("moe_vs_fusionbench")
    # A bigger batch than TINY so one step's scratch space is well above the RSS granularity. The probe runs in a
    # fresh process with large blocks mmapped, as the bench runs it: in pytest's long-lived process a step can reuse
    # heap pages that earlier tests left resident, and the peak then reads below the start (CI saw -0.2 MB).
    argv = [*TINY, "--batch", "64"]
    extra = bench.measure_memory(bench.parse_args(argv), argv, "ours", "fwdbwd")
    assert extra > 0


@pytest.mark.skipif(not FUSIONBENCH_PYTHON.exists(),
                    reason="FusionBench venv absent: run `bash bench/setup_fusionbench.sh` to test that variant")
def test_moe_bench_matches_fusionbench_tiny():
    done = subprocess.run([str(FUSIONBENCH_PYTHON), str(BENCH / "moe_vs_fusionbench.py"), *TINY, "--no-memory"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["max_abs_diff"] <= 1e-4
    assert result["max_abs_diff_router_grad"] <= 1e-4
    assert result["fwd_ms_fusionbench"] > 0 and result["fwdbwd_ms_fusionbench"] > 0


def test_adapt_speed_measures_real_adaptation_steps():
    from tests.helpers import tiny_task, tiny_zoo

    bench = load_script("adapt_speed")
    zoo = tiny_zoo(n_experts=2)
    tasks = [tiny_task(name, seed=i) for i, name in enumerate(zoo.task_names)]
    result = bench.measure(zoo, tasks, steps=3, per_task=4)
    assert result["steps"] == 3 and result["images_per_step"] == 8
    assert result["adapt_s"] >= result["step_ms_median"] / 1000 > 0
    assert result["images_per_s"] == pytest.approx(8 / (result["step_ms_median"] / 1000))


def test_adapt_speed_on_the_pocket_zoo(capsys):
    adapt = load_script("adapt_speed").main(["--steps", "2", "--samples", "8"])
    assert adapt["steps"] == 2 and adapt["adapt_s"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == adapt


def test_app_flow_on_the_pocket_zoo(capsys):
    flow = load_script("app_flow").main(["--steps", "2", "--samples", "8"])
    assert flow["steps"] == 2 and flow["total_s"] >= flow["adapt_s"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == flow


def test_analysis_views_bench_on_the_pocket_zoo(capsys):
    views = load_script("analysis_views").main(["--steps", "2", "--corruptions", "contrast"])
    assert set(views["seconds"]) == {"routing_patches", "interference", "cross_accuracy", "lambda_sweep", "cost",
                                     "per_task_lambdas"}
    assert list(views["robustness_seconds"]) == ["contrast"] and views["models"][0] == "pretrained"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == views


def test_app_latency_in_process_on_the_pocket_zoo(capsys):
    app = load_script("app_latency").main(["--zoos", "pocket", "--uploads", "1", "--samples", "4", "--in-process"])
    assert app["in_process"] and app["pocket"]["startup_s"] > 0 and app["pocket"]["upload_median_s"] > 0
    assert app["pocket"]["load_s"] > 0 and app["pocket"]["merge_s"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == app


@pytest.mark.slow
def test_app_latency_starts_the_app_on_the_pocket_zoo(capsys):
    app = load_script("app_latency").main(["--zoos", "pocket", "--uploads", "1", "--samples", "4"])
    assert not app["in_process"] and app["pocket"]["startup_s"] > 0 and app["pocket"]["upload_median_s"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == app


def test_ensembled_linear_variants_agree_with_the_library(capsys):
    result = load_script("ensembled_linear_variants").main(
        ["--width", "32", "--tokens", "5", "--experts", "3", "--batch", "4", "--rows", "16", "--runs", "1",
         "--warmup", "0"]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    exact = ("library", "build", "build_buf", "chunked", "tokens", "apply_only")
    # every exact formulation computes the same layer
    assert all(result["max_abs_diff"][name] <= 1e-5 for name in exact)
    assert result["max_abs_diff"]["dense"] > 1e-5  # the routing changes the output, so the comparison means something
    assert all(ms > 0 for ms in result["mlp_ms"].values())


def test_sketch_digits_bench_tiny(capsys):
    result = load_script("sketch_digits").main(["--per-digit", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["drawings"] == 10 and result["labels"] == list(range(10))
    for name in ("expert", "pretrained"):
        predictions = result["predictions"][name]
        assert len(predictions["before"]) == len(predictions["after"]) == 10
        for when in ("before", "after"):
            correct = sum(p == y for p, y in zip(predictions[when], range(10), strict=True))
            assert result[f"{name}_{when}"] == 10.0 * correct
    assert result["expert_after"] > result["expert_before"]


def test_classroom_two_students_tiny(capsys, tmp_path):
    calls = tmp_path / "calls.jsonl"
    result = load_script("classroom").main(["--students", "3", "--steps", "2", "--samples", "8", "--probes", "1",
                                            "--calls", str(calls), "--changed", "1", "--no-rates", "--no-restart"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    written = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(written) == sum(row["calls"] for row in result["endpoints"].values()) + 8  # and the probe's 8 calls
    assert [c["start"] for c in written] == sorted(c["start"] for c in written)
    assert all(c["end"] >= c["start"] and c["ok"] for c in written)
    assert result["cpu_s"]["server"] > 0 and result["cpu_s"]["clients"] > 0
    for key in ("students", "errors", "hung", "mismatched_tables", "classify_p95_s", "last_adapted_s", "last_table_s",
                "peak_rss_mb", "per_session_mb", "endpoints"):
        assert key in result, key
    assert result["errors"] == 0, result["error_messages"]
    assert result["students"] == result["adapted"] == result["tables"] == 3 and result["steps"] == 2
    assert result["probes"] == 1 and result["per_session_mb"] is not None
    assert result["mismatched_tables"] == 0  # students 0 and 1 (and the probe) got the same accuracy table
    assert result["changed"] == 1 and result["changed_tables_own"] is True  # student 2 (lambda 0.5) got its own
    assert result["changed_last_table_s"] >= result["changed_last_adapted_s"] > 0
    assert result["last_table_s"] >= result["default_last_table_s"] >= result["default_last_adapted_s"] > 0
    assert result["classify_calls"] == 9 and result["endpoints"]["/classify_example"]["failed"] == 0
    assert result["peak_rss_mb"] > 0 and result["last_table_s"] >= result["last_adapted_s"] > 0


def test_classroom_board_tiny(capsys):
    """--board: every student's three lesson results reach the teacher's view; the count sees the students come and
    go (#30)."""
    result = load_script("classroom").main(["--students", "2", "--flow", "lesson", "--board", "--probes", "0",
                                            "--steps", "2", "--samples", "8", "--examples", "1", "--no-rates",
                                            "--no-restart"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["errors"] == 0, result["error_messages"]
    board = result["board"]
    assert board["board_submitted"] == board["board_seen"] == 6 and board["teacher_errors"] == []
    assert 0 <= board["board_lag_s"] <= 5 and board["board_all_seen_s"] >= board["board_last_submit_s"] > 0
    assert board["count_max"] >= 2 and board["count_join_lag_s"] is not None
    # the pages stop ticking: the count falls within seconds (gradio's own notice of a closed tab took ~30 s)
    assert board["count_leave_lag_s"] is not None and board["count_leave_lag_s"] <= 10
    for endpoint in ("/submit_to_board", "/submit_to_board_forget", "/submit_to_board_wemoe"):
        assert result["endpoints"][endpoint]["calls"] == 2 and result["endpoints"][endpoint]["failed"] == 0


def test_the_class_reports_the_adaptation_steps_its_students_ran():
    """The lesson sizes its adaptation (20 steps on ViT-B/32 on 2 cores): the summary says what the students' last
    statuses report, not the lab's default."""
    from app.messages import adapt_outcome

    classroom = load_script("classroom")
    result = type("Result", (), {"history": [type("Record", (), {"loss": 0.5})()], "adapt_steps": 20,
                                 "from_cache": True})()
    status = adapt_outcome("WEMoE (routed)", 20, 20, 0.9, result, 12.0, stopped=False, failed=None)
    students = [classroom.Student(0, status="Merging..."), classroom.Student(1, status=status)]
    assert classroom.adapted_steps(students) == 20
    assert classroom.adapted_steps([classroom.Student(0)]) is None


def test_wemoe_scaling_tiny(capsys):
    result = load_script("wemoe_scaling").main(["--experts", "2,3", "--batches", "1,2", "--tokens", "5",
                                                "--width", "32", "--rank", "4", "--runs", "1"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["cpu"] and result["gemm_gflops"]["torch"] > 0
    assert [(r["experts"], r["batch"]) for r in result["rows"]] == [(2, 1), (2, 2), (3, 1), (3, 2)]
    for row in result["rows"]:
        for mode in ("fwd", "fwdbwd"):
            assert row[mode]["dense"] in ("dense_torch", "dense_kernel")
            assert row[mode]["dense_ms"] == min(row[mode]["ms"][n] for n in ("dense_torch", "dense_kernel")
                                                if n in row[mode]["ms"])
            assert all(ratio > 0 for ratio in row[mode]["ratio"].values())


def test_compressed_wemoe_tiny(capsys):
    result = load_script("compressed_wemoe").main([*TINY, "--rank", "4", "--ranks", "2", "--pocket-steps", "2",
                                                   "--samples", "8", "--losses", "entropy,im"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    for key in ("fwd_ratio_dense", "fwdbwd_ratio_dense", "extra_model_memory_ratio"):
        assert result[key] > 0, key
    assert result["rank"] == 4
    assert 0 <= result["pocket_avg_compressed"] <= 100 and 0 <= result["pocket_avg_exact"] <= 100
    tower = result["tower"]
    assert tower["fwd"]["dense"] in ("dense_torch", "dense_kernel")
    assert tower["max_abs_diff_vs_exact"]["dense_torch"] > 1e-6  # random routers: WEMoE is not task arithmetic
    assert tower["max_abs_diff_vs_exact"]["dense_kernel"] == pytest.approx(
        tower["max_abs_diff_vs_exact"]["dense_torch"], abs=1e-5)
    # fewer components, less memory: rank 2 holds less than rank 4, which holds less than the exact task vectors
    memory = tower["memory"]
    assert (memory["rank_2"]["extra_experts_ratio"] < memory["rank_4"]["extra_experts_ratio"]
            < memory["exact"]["extra_experts_ratio"])
    energy = result["pocket"]["energy"]
    assert 0 < energy["2"]["mean"] < energy["4"]["mean"] <= 1
    assert set(result["pocket"]["average"]) == {"entropy", "im"}


def test_classroom_waits_for_the_apps_warm_up_from_its_log(tmp_path):
    wait = load_script("classroom").wait_for_warm_up
    log = tmp_path / "app.log"
    log.write_text("INFO app.warm: default lesson warmed in 41.0 s\n")
    assert wait(log, timeout=5) < 5
    log.write_text("ERROR app.warm: warming the default lesson failed; sessions compute it themselves\n")
    with pytest.raises(RuntimeError, match="could not warm"):
        wait(log, timeout=5)
    log.write_text("INFO uvicorn: started\n")
    with pytest.raises(TimeoutError):
        wait(log, timeout=0.3)


def test_hostile_visitor_tiny(capsys):
    """Every hostile call refused with a specific message, no traceback logged, the victim's merges unchanged."""
    result = load_script("hostile_visitor").main(["--crowd", "2", "--crowd-images", "40", "--classifications", "2"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result["calls"] >= 40 and result["generic_messages"] == [] and result["not_refused"] == []
    assert result["tracebacks"] == 0 and result["victim_unchanged"] and result["server_up"]
    by_case = {row["case"]: row["message"] for row in result["cases"]}
    assert "serves others" in by_case["task source '/etc/passwd'"]
    assert "/etc/passwd" not in by_case["task source '/etc'"]
    assert "413" in by_case["25 MB image"] and "1.0 GiB" in by_case["task upload bomb.zip"]
    assert "adapting wemoe" in by_case["merge while adapting"] and "Stopped" in by_case["cancel while adapting"]
