"""One copy of each tensor: mapped safetensors, fused q/k/v read from the file, expert towers on the zoo's tensors;
and bench/zoo_memory.py end to end in its tiny mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import load_script
from wemoe.errors import ZooError
from wemoe.workbench.loaded_zoo import LoadedZoo
from wemoe.zoo.hf_convert import hf_vision_to_open_clip
from wemoe.zoo.mapped_weights import MappedState, map_safetensors
from wemoe.zoo.presets import PAPER_TASKS
from wemoe.zoo.sources import load_spec

BENCH = Path(__file__).resolve().parents[2] / "bench" / "zoo_memory.py"


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """The tiny stand-in's models in a hub-layout cache (bench/standin_zoo.py) and a spec loading them from their
    snapshot folders (the base from its file)."""
    standin = load_script("standin_zoo")
    cache = tmp_path_factory.mktemp("hub")
    spec = standin.build_models(cache, standin.SHAPES["tiny"], list(PAPER_TASKS[:3]))
    base = standin.snapshot_folder(cache, standin.BASE_REPO) / standin.BASE_FILE
    return {"name": spec["name"], "model": standin.TINY_MODEL, "model_config": standin.TINY_CONFIG,
            "pretrained": str(base), "quick_gelu": True,
            "experts": {task: str(standin.snapshot_folder(cache, repo)) for task, repo in spec["experts"].items()}}


def test_mapped_safetensors_match_the_library_and_fuse_from_the_file(tmp_path):
    tensors = {"a": torch.randn(3, 4), "h": torch.randn(5).half(), "b": torch.randn(2, 4), "c": torch.randn(7, 4),
               "e": torch.empty(0, 3), "i": torch.arange(5), "bf": torch.randn(3).bfloat16(), "t": torch.tensor(True)}
    save_file(tensors, tmp_path / "w.safetensors")
    mapped = map_safetensors(tmp_path / "w.safetensors")
    assert isinstance(mapped, MappedState) and sorted(mapped) == sorted(load_file(tmp_path / "w.safetensors"))
    for key, value in tensors.items():
        assert mapped[key].dtype == value.dtype and torch.equal(mapped[key], value), key
    assert torch.equal(mapped.read_concat(["a", "b", "c"]), torch.cat([tensors[k] for k in "abc"]))
    mapped["a"].add_(1)  # copy-on-write: the file keeps its bytes
    assert torch.equal(map_safetensors(tmp_path / "w.safetensors")["a"], tensors["a"])


def test_mapped_safetensors_refuse_broken_files(tmp_path):
    save_file({"a": torch.randn(64, 64)}, tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ZooError, match="does not fit its byte range"):
        map_safetensors(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ZooError, match="not a safetensors file"):
        map_safetensors(tmp_path / "junk.safetensors")


def test_a_loaded_zoo_holds_one_copy_of_each_tensor(tiny_cache):
    zoo = load_spec(tiny_cache)
    files = {task: Path(folder) / "model.safetensors" for task, folder in tiny_cache["experts"].items()}
    for task, state in zoo.experts.items():
        # every tensor but the fused in_proj (read from the file) and proj (the base's) views the expert's file
        storages = {k: v.untyped_storage() for k, v in state.items()}
        mapped = {k for k in state if "in_proj" not in k and k != "proj"}
        assert len({storages[k].data_ptr() for k in mapped}) == 1
        assert storages[next(iter(mapped))].nbytes() == files[task].stat().st_size
        assert all(storages[k].nbytes() == state[k].nbytes for k in state if k not in mapped)
        # the same numbers as converting the file's tensors in memory
        reference = hf_vision_to_open_clip(dict(load_file(files[task])), zoo.clip.visual.proj)
        assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_expert_towers_run_on_the_zoo_tensors(tiny_cache):
    zoo = load_spec(tiny_cache)
    before = {k: (v.data_ptr(), v.clone()) for k, v in zoo.clip.visual.state_dict().items()}
    tasks = load_script("standin_zoo").synthetic_tasks(zoo.task_names, classes=2, images=2, size=32)
    loaded = LoadedZoo(zoo, tasks=tasks)
    for task, tower in loaded.expert_towers().items():
        for key, value in tower.state_dict().items():
            assert value.data_ptr() == zoo.experts[task][key].data_ptr(), (task, key)
    for key, value in zoo.clip.visual.state_dict().items():  # the base tower is untouched
        assert value.data_ptr() == before[key][0] and torch.equal(value, before[key][1]), key


def test_zoo_memory_bench_tiny(tmp_path):
    done = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--cache-dir", str(tmp_path / "hub"), "--phases", "load,adapt",
         "--steps", "2", "--images", "4", "--per-task", "2"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["model"] == "tiny" and result["experts"] == len(PAPER_TASKS) and result["cpu"]
    assert set(result["phases"]) == {"load", "adapt"}
    for phase in result["phases"].values():
        assert phase["peak_mb"] >= phase["after_load_mb"] > 0 and phase["ratio"] > 0
    assert any(line.startswith("CPU:") for line in lines)


def test_a_full_clip_checkpoint_as_expert_keeps_only_its_image_tower(tiny_cache):
    zoo = load_spec(tiny_cache)
    from wemoe.zoo.sources import load_expert

    state = load_expert("sun397", tiny_cache["pretrained"], zoo.clip)  # the base file: a whole open_clip CLIP
    assert sorted(state) == sorted(zoo.clip.visual.state_dict())
    assert all(torch.equal(state[k], v) for k, v in zoo.clip.visual.state_dict().items())


def test_torch_zip_checkpoints_load_memory_mapped(tmp_path):
    from wemoe.zoo.checkpoints import read_weights

    tensors = {"module.a": torch.randn(8, 8), "module.b": torch.arange(3)}
    torch.save({"state_dict": tensors}, tmp_path / "w.pt")
    state = read_weights(tmp_path / "w.pt")
    assert sorted(state) == ["a", "b"] and all(torch.equal(state[k[7:]], v) for k, v in tensors.items())
