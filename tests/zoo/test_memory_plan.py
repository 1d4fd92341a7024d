"""The memory planner: parameter counts equal the models', its figures reproduce the measured ViT-B/32 zoo, the L/14
20-task preset states its memory per method and a merge that would not fit is refused with what fits instead;
``python -m wemoe zoos`` lists them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_CONFIG, TINY_MODEL, tiny_clip, tiny_task, tiny_zoo
from wemoe.__main__ import main
from wemoe.errors import MergeTooLarge
from wemoe.workbench.workbench import Workbench
from wemoe.zoo.clip_models import create_clip
from wemoe.zoo.memory_plan import (
    ADAMERGING,
    EMR,
    KINDS,
    PER_MATRIX,
    STATIC,
    TIES,
    WEMOE,
    WEMOE_COMPRESSED,
    check_merge_fits,
    kind_of,
    merge_bytes,
    most_experts_that_fit,
    plan,
    shape_of_config,
    shape_of_spec,
    shape_of_zoo,
)
from wemoe.zoo.presets import PRESETS

ROOT = Path(__file__).resolve().parents[2]
MB = 1e6
GIB_MB = 2**30 / 2**20  # MERGE_EXPLORER_MEMORY_MB is in MiB


def _counts(clip) -> tuple[int, int, int, int]:
    visual = clip.visual.state_dict()
    return (sum(p.numel() for p in clip.parameters()), sum(p.numel() for p in clip.visual.parameters()),
            sum(v.numel() for k, v in visual.items() if ".mlp." in k),
            sum(v.numel() for k, v in visual.items() if ".attn.in_proj_" in k))


def test_parameter_counts_from_the_config_equal_the_models():
    clip, _, _ = create_clip("ViT-B-32", quick_gelu=True)
    shape = shape_of_spec(PRESETS["vit-b-32-8tasks"])
    assert (shape.clip_params, shape.tower_params, shape.mlp_params, shape.in_proj_params) == _counts(clip)
    assert (shape.layers, shape.width, shape.mlp_width, shape.heads, shape.tokens) == (12, 768, 3072, 12, 50)
    tiny, _, _ = tiny_clip()
    small = shape_of_config("tiny", TINY_CONFIG, 3)
    assert (small.clip_params, small.tower_params, small.mlp_params, small.in_proj_params) == _counts(tiny)
    counted = shape_of_zoo(tiny_zoo(n_experts=3))  # a loaded zoo, counted from its modules
    assert (counted.clip_params, counted.tower_params, counted.mlp_params, counted.layers, counted.tokens) == (
        small.clip_params, small.tower_params, small.mlp_params, small.layers, small.tokens)


def test_the_estimates_reproduce_the_measured_b32_zoo():
    """bench/README.md, "Memory of a real zoo": bench/zoo_memory.py on the vit-b-32-8tasks preset (2 images per task
    per adaptation step): load 4341 MB; each expert's checkpoint 351 MB and the base's 605 MB; task arithmetic one
    tensor at a time 829 MB over its load (3955 -> 4784, "Step 2's memory"), TIES 1414 MB (3956 -> 5370);
    "The WEMoE merge one block at a time": the merge 2590 MB over its load (3961 -> 6551); 10 adaptation steps added
    283 MB over the merge's peak when it was measured with the old merge (10006 -> 10289)."""
    memory = plan(shape_of_spec(PRESETS["vit-b-32-8tasks"]), per_task=2)
    assert memory.load / MB == pytest.approx(4341, rel=0.01)
    assert (memory.peak(STATIC) - memory.load) / MB == pytest.approx(829, rel=0.02)
    assert 1414 <= (memory.peak(TIES) - memory.load) / MB <= 1414 * 1.3  # measured 3956 -> 5370: on the safe side
    assert (memory.peak(WEMOE) - memory.load) / MB == pytest.approx(2590, rel=0.01)
    adapting = (memory.peak(WEMOE, adapting=True) - memory.load) / MB
    assert 2590 + 283 <= adapting <= (2590 + 283) * 1.15  # on the safe side
    assert memory.download / MB == pytest.approx(605 + 8 * 351, rel=0.01)


def test_the_l14_twenty_task_preset_states_its_memory_per_method():
    memory = plan(shape_of_spec(PRESETS["vit-l-14-20tasks"]))
    peaks = {kind: memory.peak(kind) for kind in KINDS}
    assert memory.shape.experts == 20 and memory.adapt_images == 20 * 16
    assert memory.download > 25e9  # 20 experts of 1.2 GB and a 1.7 GB base
    assert memory.load < peaks[STATIC] < peaks[TIES] < peaks[PER_MATRIX] < peaks[EMR] < peaks[ADAMERGING]
    # task arithmetic and TIES are merged one tensor at a time: a few towers, below WEMoE, which keeps its MLP stack
    assert peaks[STATIC] < peaks[WEMOE_COMPRESSED] < peaks[WEMOE] < peaks[PER_MATRIX]
    few = shape_of_spec(PRESETS["vit-l-14-8tasks"])  # the same model, 8 experts: the same task arithmetic, TIES alike
    assert merge_bytes(few, STATIC) == merge_bytes(memory.shape, STATIC)
    assert merge_bytes(few, TIES) <= merge_bytes(memory.shape, TIES) < 1.5 * merge_bytes(few, TIES)
    # dense WEMoE keeps every expert's MLP task vectors: 20 x 24 blocks x 2 x 1024 x 4096 floats over the zoo, at least
    assert peaks[WEMOE] - memory.load >= 20 * 24 * 2 * 1024 * 4096 * 4
    b32 = plan(shape_of_spec(PRESETS["vit-b-32-20tasks"]))
    assert all(b32.peak(kind) < memory.peak(kind) for kind in KINDS)


def test_kind_of_reads_the_rank():
    assert kind_of("wemoe") == WEMOE and kind_of("wemoe", {"rank": 8}) == WEMOE_COMPRESSED
    assert kind_of("wemoe_compressed") == WEMOE_COMPRESSED and kind_of("wemoe_compressed", {"rank": 0}) == WEMOE
    assert kind_of("ties") == TIES and kind_of("task_arithmetic") == kind_of("simple_average") == STATIC
    assert kind_of("tsv_m") == kind_of("iso_cts") == kind_of("wudi") == PER_MATRIX and kind_of("emr_merging") == EMR
    assert kind_of("adamerging") == kind_of("task_wise_adamerging") == ADAMERGING


def test_wemoe_on_l14_twenty_tasks_is_refused_with_compressed_experts_named(monkeypatch):
    shape = shape_of_spec(PRESETS["vit-l-14-20tasks"])
    memory = plan(shape)
    budget_gb = (memory.peak(WEMOE_COMPRESSED) + memory.peak(WEMOE)) / 2 / 2**30  # between the two
    monkeypatch.setenv("MERGE_EXPLORER_MEMORY_MB", str(round(budget_gb * GIB_MB)))
    with pytest.raises(MergeTooLarge) as info:
        check_merge_fits(shape, "wemoe")
    message = str(info.value)
    assert f"about {memory.peak(WEMOE) / 1e9:.1f} GB" in message and "MERGE_EXPLORER_MEMORY_MB" in message
    assert f"wemoe_compressed, or wemoe.rank=8: about {memory.peak(WEMOE_COMPRESSED) / 1e9:.1f} GB, fits" in message
    check_merge_fits(shape, "wemoe_compressed")  # the alternative named is indeed let through
    check_merge_fits(shape, "task_arithmetic")  # one tensor at a time: they fit where WEMoE does not
    check_merge_fits(shape, "ties")


def test_fewer_experts_named_are_the_most_that_fit(monkeypatch):
    shape = shape_of_spec(PRESETS["vit-l-14-20tasks"])
    monkeypatch.setenv("MERGE_EXPLORER_MEMORY_MB", "40000")
    budget = 40000 * 2**20
    with pytest.raises(MergeTooLarge) as info:
        check_merge_fits(shape, "wemoe")
    count = most_experts_that_fit(shape, WEMOE, budget, 20)
    assert 2 <= count < 20
    assert plan(shape.with_experts(count), loaded_experts=20).peak(WEMOE) <= budget
    assert plan(shape.with_experts(count + 1), loaded_experts=20).peak(WEMOE) > budget
    assert f"fewer experts: {count} of the 20 fit (--tasks" in str(info.value)
    compressed = plan(shape, loaded_experts=20).peak(WEMOE_COMPRESSED)
    assert compressed <= budget and f"about {compressed / 1e9:.1f} GB, fits" in str(info.value)  # all 20 experts


def test_nothing_fits_a_small_budget_names_a_smaller_model(monkeypatch):
    monkeypatch.setenv("MERGE_EXPLORER_MEMORY_MB", "8000")  # below even two L/14 experts' task arithmetic
    with pytest.raises(MergeTooLarge, match=r"task_arithmetic on vit-l-14-20tasks \(20 experts\) would need about "
                                            r"30.7 GB.*a zoo of a smaller model"):
        check_merge_fits(shape_of_spec(PRESETS["vit-l-14-20tasks"]), "task_arithmetic")


def test_the_workbench_refuses_before_merging(monkeypatch):
    bench = Workbench(tiny_zoo(n_experts=2), tasks=[tiny_task("task0"), tiny_task("task1", seed=1)])
    monkeypatch.setenv("MERGE_EXPLORER_MEMORY_MB", "1")  # 1 MiB: less than the bare process
    calls = []
    monkeypatch.setattr("wemoe.methods.task_arithmetic.TaskArithmetic.merge",
                        lambda self, zoo, **params: calls.append(params))
    with pytest.raises(MergeTooLarge, match=r"task_arithmetic on .* \(2 experts\) would need about .* more than the "
                                            r"1 MB allowed \(MERGE_EXPLORER_MEMORY_MB=1\)\. Nothing was merged"):
        bench.merge("task_arithmetic")
    assert calls == [] and bench.merges == {}
    monkeypatch.undo()
    assert bench.merge("task_arithmetic").method == "task_arithmetic"  # the machine's memory: it fits


def test_zoos_lists_every_zoo_with_its_memory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MERGE_EXPLORER_MEMORY_MB", "16000")
    assert main(["zoos", "--json", str(tmp_path / "zoos.json")]) == 0
    out = capsys.readouterr().out
    for name in ["pocket", *PRESETS]:
        assert f"\n{name}  [" in f"\n{out}", name
    block = out.split("vit-l-14-20tasks  [", 1)[1].split("\n\n", 1)[0]
    assert "tasks (20): sun397, stanford-cars" in block and "rendered-sst2" in block
    assert "download: about 26.0 GB (estimate)" in block and "(does not fit)" in block
    assert "bench/zoo_memory.py" in out and "estimate" in out.lower()
    listed = {entry["name"]: entry for entry in json.loads((tmp_path / "zoos.json").read_text())}
    l14 = listed["vit-l-14-20tasks"]
    memory = plan(shape_of_spec(PRESETS["vit-l-14-20tasks"]))
    assert l14["merge_peak_bytes"] == {kind: memory.peak(kind) for kind in KINDS}
    assert l14["fits"][WEMOE] is False and l14["download_bytes"] == memory.download
    assert listed["pocket"]["download_bytes"] == 0 and listed["pocket"]["fits"][WEMOE] is True
    assert TINY_MODEL not in listed


def test_memory_plan_check_bench_tiny():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_plan_check.py"), "--tasks", "2,3",
                           "--methods", "task_arithmetic,ties", "--width", "64", "--layers", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(r["experts"], r["method"]) for r in rows] == [(2, "task_arithmetic"), (2, "ties"), (3, "task_arithmetic"),
                                                            (3, "ties")]
    # the estimates are the planner's for that tower (width 64, MLP 256): task arithmetic 2.4 towers whatever the number
    # of experts; TIES 5.1 towers, or one tower and 5 x every expert's MLP weight where more
    for r in rows:
        mlp_weight_mb = 64 * 256 * 4 / MB
        towers = 2.4 * r["tower_mb"] if r["method"] == "task_arithmetic" else max(
            5.1 * r["tower_mb"], r["tower_mb"] + 5.0 * r["experts"] * mlp_weight_mb)
        assert r["estimated_mb"] == pytest.approx(towers, rel=0.01, abs=0.1)
        assert r["measured_mb"] >= 0
