"""bench/merge_speed.py and bench/methods_vs_fusionbench.py run end to end with tiny settings (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wemoe.methods import list_methods

BENCH = Path(__file__).resolve().parents[2] / "bench"
FUSIONBENCH_PYTHON = BENCH / ".venv-fusionbench" / "bin" / "python"
TINY = ["--width", "64", "--image-size", "32", "--patch-size", "16", "--experts", "3", "--wudi-steps", "5"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_merge_speed_times_every_method_tiny(capsys):
    result = _script("merge_speed").main([*TINY, "--layers", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1]) == result and out[0].startswith("CPU:")
    assert list(result["seconds"]) == list_methods() and all(s >= 0 for s in result["seconds"].values())
    assert result["zoo"]["experts"] == 3


def _fusionbench_bench(*flags: str) -> tuple[dict[str, float], list[dict]]:
    done = subprocess.run([str(FUSIONBENCH_PYTHON), str(BENCH / "methods_vs_fusionbench.py"), *TINY, *flags],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]), [json.loads(line) for line in lines if line.startswith('{"layout"')]


NO_FUSIONBENCH = "FusionBench venv absent: run `bash bench/setup_fusionbench.sh` to test this bench"


@pytest.mark.skipif(not FUSIONBENCH_PYTHON.exists(), reason=NO_FUSIONBENCH)
def test_methods_match_fusionbench_tiny():
    # two blocks of structured task vectors (the default), both layouts
    result, layouts = _fusionbench_bench()
    assert set(result) == {"ties", "tsv_m", "iso_c", "iso_cts", "wudi", "emr_merging", "adamerging"}
    assert [row["layout"] for row in layouts] == ["fused", "split"]
    assert all(diff <= 1e-5 for diff in result.values()), result
    # TSV-M follows FusionBench's operations: only adding the merged vector to the base rounds
    assert result["tsv_m"] <= 1e-7 and result["ties"] <= 1e-7 and result["adamerging"] <= 1e-7, result


@pytest.mark.skipif(not FUSIONBENCH_PYTHON.exists(), reason=NO_FUSIONBENCH)
def test_matrix_rules_match_fusionbench_in_float64_tiny():
    # what is left of the float32 differences (WUDI's included, at matched steps) is rounding, not the rule
    result, layouts = _fusionbench_bench("--float64")
    assert set(result) == {"tsv_m", "iso_c", "iso_cts", "wudi"}
    assert all(rel <= 1e-10 for row in layouts for rel in row["relative_to_max_merged"].values()), layouts


def test_structured_task_vectors_share_directions_and_have_decaying_full_rank_spectra():
    zoo_of = _script("structured_zoo").structured_zoo
    key = "transformer.resblocks.0.mlp.c_fc.weight"  # [256, 64]
    for iid, shared in ((False, 0.5), (True, 0.0)):
        zoo = zoo_of(1, 64, 16, 32, 3, 0.01, shared=0.5, decay=1.0, seed=0, iid=iid)
        taus = [(expert[key] - zoo.base_state[key]).double() for expert in zoo.experts.values()]
        cosine = float(torch.nn.functional.cosine_similarity(taus[0].flatten(), taus[1].flatten(), dim=0))
        assert abs(cosine - shared) < 0.1, (iid, cosine)
        assert abs(float(taus[0].pow(2).mean().sqrt()) - 0.01) < 1e-3
        spectrum = torch.linalg.svdvals(taus[0])
        if not iid:  # full rank, decaying: the shared and own parts each ~ 1/(i+1) over 64 values
            assert float(spectrum[0] / spectrum[-1]) > 10 and float(spectrum[-1]) > 1e-4 * float(spectrum[0])
        else:
            assert float(spectrum[0] / spectrum[-1]) < 10
