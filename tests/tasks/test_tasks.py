"""Tasks: the registry (every task is usable), the standard tasks' lists, custom folder and parquet tasks offline."""

from __future__ import annotations

import zipfile

import datasets
import numpy as np
import pytest
from PIL import Image

from wemoe.errors import TaskError
from wemoe.tasks.readers import task_from_folder, task_from_hub, task_from_parquet, task_from_source, task_from_zip
from wemoe.tasks.registry import get_task, list_tasks
from wemoe.tasks.standard_tasks import STANDARD_TASKS, hub_loader
from wemoe.zoo.presets import PAPER_TASKS, PRESETS


@pytest.mark.parametrize("name", list_tasks())
def test_registered_task_is_well_formed(name):
    task = get_task(name)
    assert task.name == name
    assert len(task.classnames) >= 2
    assert len(set(task.classnames)) == len(task.classnames), "duplicate class names"
    assert all(c.strip() == c and c for c in task.classnames)
    assert task.templates
    for template in task.templates:
        assert template.count("{c}") == 1, template
    assert task.prompts(task.classnames[0])[0] == task.templates[0].format(c=task.classnames[0])


EXPECTED_CLASSES = {
    "sun397": 397,
    "stanford-cars": 196,
    "resisc45": 45,
    "eurosat": 10,
    "svhn": 10,
    "gtsrb": 43,
    "mnist": 10,
    "dtd": 47,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASSES))
def test_standard_task_lists(name):
    task = get_task(name)
    assert len(task.classnames) == EXPECTED_CLASSES[name]
    assert task.source.startswith("hf:")


def test_standard_task_details():
    assert get_task("mnist").classnames == tuple(str(i) for i in range(10))
    assert get_task("mnist").prompts("7") == ['a photo of the number: "7".']
    assert get_task("svhn").templates == get_task("mnist").templates
    assert get_task("eurosat").prompts("forest")[0] == "a centered satellite photo of forest."
    assert get_task("eurosat").classnames[0] == "annual crop land"
    assert get_task("dtd").prompts("banded") == [
        f"a photo of {a} banded {t}." for a in ("a", "the") for t in ("texture", "pattern", "thing", "object")
    ]
    assert len(get_task("resisc45").templates) == 18
    assert get_task("resisc45").templates[:2] == ("satellite imagery of {c}.", "aerial imagery of {c}.")
    assert get_task("sun397").classnames[:2] == ("abbey", "airplane cabin")
    assert get_task("stanford-cars").classnames[0] == "AM General Hummer SUV 2000"


def test_presets_name_registered_tasks():
    assert set(PAPER_TASKS) == set(STANDARD_TASKS)
    for spec in PRESETS.values():
        assert list(spec.experts)[:8] == list(PAPER_TASKS)
        assert all(get_task(task).name == task for task in spec.experts)


def test_unknown_task_lists_known():
    with pytest.raises(TaskError, match="Known tasks:.*mnist"):
        get_task("no-such-task")


def test_hub_task_offline_says_how_to_download(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    load = hub_loader("demo", "wemoe-tests/never-cached", None)
    with pytest.raises(
        TaskError, match=r"wemoe-tests/never-cached.*load_dataset\('wemoe-tests/never-cached'.*HF_DATASETS_OFFLINE=1"
    ):
        load("test")


def _write_images(folder, classes, per_class, seed):
    rng = np.random.default_rng(seed)
    for name in classes:
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / name / f"{i}.png")


def test_image_folder_task_loads_offline(tmp_path):
    _write_images(tmp_path / "pets", ["cat", "hot_dog"], per_class=3, seed=0)
    task = task_from_folder(tmp_path / "pets", templates=("a {c}.",))
    assert task.name == "pets"
    assert task.classnames == ("cat", "hot dog")
    data = task.dataset("test")
    assert data.column_names == ["image", "label"] and len(data) == 6
    assert sorted(data["label"]) == [0, 0, 0, 1, 1, 1]
    assert data[0]["image"].size == (8, 8)
    with pytest.raises(TaskError, match="only a test split"):
        task.dataset("train")


def test_image_folder_with_splits(tmp_path):
    _write_images(tmp_path / "t" / "train", ["a", "b"], per_class=2, seed=1)
    _write_images(tmp_path / "t" / "test", ["a", "b"], per_class=1, seed=2)
    task = task_from_folder(tmp_path / "t", name="ab")
    assert task.name == "ab" and task.classnames == ("a", "b")
    assert len(task.dataset("train")) == 4 and len(task.dataset("test")) == 2


def test_image_folder_errors(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        task_from_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TaskError, match="no class subfolders"):
        task_from_folder(tmp_path / "empty")


def test_sampling_is_seeded(tmp_path):
    _write_images(tmp_path / "s", ["a", "b", "c"], per_class=6, seed=3)
    task = task_from_folder(tmp_path / "s")
    first = task.dataset(samples=5, seed=0)
    assert len(first) == 5
    assert task.dataset(samples=5, seed=0)["label"] == first["label"]
    def pick(data):
        return [np.asarray(im).tobytes() for im in data["image"]]

    assert pick(task.dataset(samples=5, seed=0)) == pick(first)
    assert pick(task.dataset(samples=5, seed=1)) != pick(first)


def _parquet(tmp_path, with_classlabel: bool):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(4)]
    label = datasets.ClassLabel(names=["no", "yes"]) if with_classlabel else datasets.Value("int64")
    data = datasets.Dataset.from_dict(
        {"img": images, "target": [0, 1, 1, 0]}, features=datasets.Features({"img": datasets.Image(), "target": label})
    )
    path = tmp_path / ("labelled.parquet" if with_classlabel else "plain.parquet")
    data.to_parquet(str(path))
    return path


def test_parquet_task(tmp_path):
    task = task_from_parquet(_parquet(tmp_path, with_classlabel=True))
    assert task.name == "labelled" and task.classnames == ("no", "yes")
    data = task.dataset()
    assert data.column_names == ["image", "label"] and data["label"] == [0, 1, 1, 0]
    assert data[0]["image"].size == (8, 8)


def test_parquet_plain_labels_need_classnames(tmp_path):
    path = _parquet(tmp_path, with_classlabel=False)
    with pytest.raises(TaskError, match="pass the class names"):
        task_from_parquet(path)
    assert task_from_parquet(path, classnames=["no", "yes"]).classnames == ("no", "yes")
    with pytest.raises(TaskError, match="does not exist"):
        task_from_parquet(tmp_path / "nope.parquet")


def test_zip_task_unpacks_safely(tmp_path):
    _write_images(tmp_path / "src" / "pets", ["cat", "hot_dog"], per_class=2, seed=4)
    path = tmp_path / "pets.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for image in sorted((tmp_path / "src").rglob("*.png")):
            archive.write(image, image.relative_to(tmp_path / "src").as_posix())  # inside one top folder, pets/
        archive.writestr("__MACOSX/pets/cat/._0.png", b"resource fork")
        archive.writestr("pets/notes.txt", "not an image")
    task = task_from_zip(path, templates=("a {c}.",))
    assert task.name == "pets" and task.classnames == ("cat", "hot dog") and len(task.dataset()) == 4
    with zipfile.ZipFile(tmp_path / "slip.zip", "w") as archive:
        archive.writestr("../escape/a/0.png", b"x")
    with pytest.raises(TaskError, match="outside its folder"):
        task_from_zip(tmp_path / "slip.zip")
    with pytest.raises(TaskError, match="more than this accepts"):
        task_from_zip(path, max_bytes=10)
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(TaskError, match="not a zip file"):
        task_from_zip(tmp_path / "bad.zip")


def test_dataset_task_reads_split_columns_and_class_names(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    path = _parquet(tmp_path, with_classlabel=True)
    path.rename(folder / "validation.parquet")  # a local dataset folder as load_dataset reads it (one split)
    task = task_from_source(f"hf:{folder} split=validation image=img label=target", "yesno")
    assert task.name == "yesno" and task.classnames == ("no", "yes") and task.source == f"hf:{folder}"
    data = task.dataset("test")  # the chosen split is the task's test split
    assert data.column_names == ["image", "label"] and data["label"] == [0, 1, 1, 0]
    with pytest.raises(TaskError, match="has no split 'test'"):
        task_from_hub(str(folder))
    with pytest.raises(TaskError, match="has no column 'picture'"):
        task_from_hub(str(folder), split="validation", image_column="picture")
    with pytest.raises(TaskError, match="unknown option 'colour=red'"):
        task_from_source(f"hf:{folder} colour=red", "x")


def test_dataset_task_offline_says_how_to_download(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TaskError, match=r"wemoe-tests/never-cached.*load_dataset\('wemoe-tests/never-cached'"):
        task_from_source("hf:wemoe-tests/never-cached split=test", "x")


def test_task_source_lines(tmp_path):
    _write_images(tmp_path / "shapes", ["circle", "square"], per_class=1, seed=5)
    task = task_from_source(f'{tmp_path / "shapes"} template="a drawing of a {{c}}."', "mine")
    assert task.name == "mine" and task.prompts("circle") == ["a drawing of a circle."]
    plain = _parquet(tmp_path, with_classlabel=False)
    named = task_from_source("up.parquet classes=no,yes", "p", uploads={"up.parquet": str(plain)})
    assert named.classnames == ("no", "yes")
    with pytest.raises(TaskError, match="only apply to hf: datasets"):
        task_from_source(f"{tmp_path / 'shapes'} split=train", "x")
    with pytest.raises(TaskError, match="must hold {c} once"):
        task_from_source(f"{tmp_path / 'shapes'} template=nothing", "x")
