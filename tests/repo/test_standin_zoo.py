"""bench/standin_zoo.py: the stand-in of the paper's ViT-B/32 zoo loads through the real hub code, offline (the zoo
by its hub ids, the test sets by ``datasets.load_dataset``), and is built once per folder (#31)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import load_script
from wemoe.tasks.standard_tasks import read_classnames
from wemoe.zoo.presets import PAPER_TASKS

# run in a fresh process: the hub libraries read HF_HOME and the offline flags when they are imported
PROBE = """
import json, sys
import wemoe
import datasets, torch
from wemoe.loading import load_zoo
zoo = load_zoo(sys.argv[1])
data = datasets.load_dataset("ufldl-stanford/svhn", "cropped_digits", split="test")
sun = datasets.load_dataset("tanganke/sun397", split="test")
base = zoo.clip.visual.state_dict()
moved = {t: max(float((s[k] - base[k]).norm() / base[k].norm()) for k in base if base[k].numel() > 1)
         for t, s in zoo.experts.items()}
print(json.dumps({"tasks": zoo.task_names, "layouts": zoo.info["expert_layouts"], "moved": moved,
                  "svhn": [len(data), data.features["label"].names, list(data[0]["image"].size)],
                  "sun397_classes": len(sun.features["label"].names)}))
"""


def test_the_tiny_standin_loads_through_the_hub_code_offline(tmp_path):
    standin = load_script("standin_zoo").ensure_standin("tiny", tmp_path / "standin")
    assert standin.choice == "vit-b-32-standin-tiny" and standin.images == 6
    env = {**os.environ, **standin.env()}
    done = subprocess.run([sys.executable, "-c", PROBE, standin.zoo], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["tasks"] == list(PAPER_TASKS)
    assert set(found["layouts"].values()) == {"hf"}  # CLIPVisionModel checkpoints, q/k/v split
    assert all(0.005 < moved < 0.02 for moved in found["moved"].values())  # base + 1% noise per tensor
    assert found["svhn"] == [6, list(read_classnames("svhn")), [64, 64]]
    assert found["sun397_classes"] == len(read_classnames("sun397")) == 397


def test_the_standin_is_built_once_per_folder_and_settings(tmp_path):
    standin_zoo = load_script("standin_zoo")
    first = standin_zoo.ensure_standin("tiny", tmp_path)
    marker = tmp_path / standin_zoo.MARKER
    built = marker.read_text()
    again = standin_zoo.ensure_standin("tiny", tmp_path)
    assert again == first and marker.read_text() == built  # found, not built again
    more = standin_zoo.ensure_standin("tiny", tmp_path, images=3)
    assert more.images == 3 and json.loads(marker.read_text())["images"] == 3
    info = json.loads(next((tmp_path / "hf" / "datasets" / "ylecun___mnist").rglob("dataset_info.json")).read_text())
    assert info["splits"]["test"]["num_examples"] == 3  # built again: 3 images now, not 6
