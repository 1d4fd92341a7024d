"""A stand-in for the paper's ViT-B/32 zoo: random weights and random images in the Hugging Face hub's own layout.

What the ``vit-b-32-8tasks`` preset downloads, with the same names, shapes and file formats, but random (seeded):

- the base, open_clip's ``timm/vit_base_patch32_clip_224.openai`` (``open_clip_model.safetensors`` and
  ``open_clip_config.json``, what the ``openai`` tag of ``ViT-B-32`` reads from the hub);
- eight FusionBench experts ``tanganke/clip-vit-base-patch32_<task>``: transformers ``CLIPVisionModel`` checkpoints
  (``config.json`` + ``model.safetensors``, q/k/v split), each the base image tower plus 1% noise per tensor;
- the eight test sets (``tanganke/sun397`` ... ``ylecun/mnist``, ``ufldl-stanford/svhn`` ``cropped_digits``) as
  ``datasets`` leaves them after a download (``$HF_HOME/datasets/<owner>___<name>/<config>/0.0.0/<commit>``: Arrow and
  ``dataset_info.json``), with the real class names and random RGB images.

With ``HF_HOME`` pointing at it and ``HF_HUB_OFFLINE=1`` the library and the app load it through their real hub code
(``StandIn.env``). Its accuracies mean nothing; its costs (memory, seconds, FLOPs) are the real zoo's.

Two sizes: ``full`` (ViT-B/32, the default: about 3.3 GB, built once in a minute or two) and ``tiny`` (the same
layout and names with a 2-layer, 64-wide tower and a few small images: seconds, for tests). ``tiny`` is not the
preset's architecture, so the app loads it as a zoo spec (``StandIn.zoo``: the ``.json`` written beside it, base as
``hf-hub:timm/vit_base_patch32_clip_224.openai``); ``full`` is the preset itself.

Built once per folder and reused (``standin.json`` records what was built): ``$MERGE_EXPLORER_STANDIN_DIR/<size>``,
else ``~/.cache/merge-explorer/standin/<size>``.

    python bench/standin_zoo.py                 # build (or find) the full stand-in, print its folder and zoo
    python bench/standin_zoo.py --size tiny
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import wemoe  # noqa: E402,F401  (its torchvision shim, before anything imports open_clip)

VERSION = 1  # bump when what is built changes: a folder built by another version is built again
DIR_ENV = "MERGE_EXPLORER_STANDIN_DIR"
MARKER = "standin.json"
BASE_REPO = "timm/vit_base_patch32_clip_224.openai"  # the openai tag's hf_hub entry in open_clip's pretrained.py
BASE_FILE = "open_clip_model.safetensors"  # what open_clip looks for first there
BASE_CONFIG = "open_clip_config.json"
EXPERT_REPO = "tanganke/clip-vit-base-patch32_{task}"
PRESET = "vit-b-32-8tasks"
TINY_MODEL = "standin-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Shape:
    """One size of the stand-in: the architecture (None: open_clip's own ViT-B-32), test images per task and their
    side in pixels."""

    name: str
    model_config: dict | None
    images: int
    side: int


SHAPES = {"full": Shape("full", None, 64, 224), "tiny": Shape("tiny", TINY_CONFIG, 6, 64)}
ZOO_SIZES = {"vit-b-32-standin": "full", "vit-b-32-standin-tiny": "tiny"}  # the names bench scripts take


@dataclass(frozen=True)
class StandIn:
    """A built stand-in: its folder, size, and what to hand the library or the app to load it."""

    root: Path
    size: str
    zoo: str  # load_zoo's argument and app.py's --zoo: the preset name (full) or the spec file (tiny)
    choice: str  # the zoo's value among the app's choices
    tasks: tuple[str, ...]
    images: int  # test images per task

    @property
    def hf_home(self) -> Path:
        """The Hugging Face home the stand-in lives in (``hub/`` and ``datasets/``)."""
        return self.root / "hf"

    def env(self) -> dict[str, str]:
        """Environment variables that make the hub code read the stand-in, offline."""
        return {"HF_HOME": str(self.hf_home), "HF_HUB_CACHE": str(self.hf_home / "hub"),
                "HF_DATASETS_CACHE": str(self.hf_home / "datasets"), "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def standin_dir(size: str) -> Path:
    """Where the stand-in of ``size`` is built: ``$MERGE_EXPLORER_STANDIN_DIR/<size>``, else under ~/.cache."""
    base = os.environ.get(DIR_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "merge-explorer" / "standin") / size


def ensure_standin(size: str = "full", root: Path | None = None, images: int | None = None,
                   progress: Callable[[str], None] | None = None) -> StandIn:
    """The stand-in of ``size`` in ``root`` (default :func:`standin_dir`), built there first unless a build with the
    same version, size and images per task is found."""
    if size not in SHAPES:
        raise ValueError(f"Unknown stand-in size {size!r}; sizes: {', '.join(SHAPES)}.")
    shape = SHAPES[size]
    images = shape.images if images is None else images
    root = Path(root) if root is not None else standin_dir(size)
    from wemoe.zoo.presets import PAPER_TASKS

    wanted = {"version": VERSION, "size": size, "images": images, "tasks": list(PAPER_TASKS)}
    marker = root / MARKER
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError):
        found = {}
    if {k: found.get(k) for k in wanted} != wanted:
        say = progress or (lambda message: None)
        start = time.perf_counter()
        if (root / "hf").exists():
            shutil.rmtree(root / "hf")
        root.mkdir(parents=True, exist_ok=True)
        say(f"building the {size} stand-in zoo in {root}")
        spec = build_models(root / "hf" / "hub", shape, list(PAPER_TASKS))
        build_datasets(root / "hf" / "datasets", list(PAPER_TASKS), images, shape.side)
        if size != "full":
            (root / "zoo.json").write_text(json.dumps(spec, indent=2))
        marker.write_text(json.dumps({**wanted, "seconds": round(time.perf_counter() - start, 1)}))
        say(f"built the {size} stand-in zoo in {time.perf_counter() - start:.0f} s")
    zoo = PRESET if size == "full" else str(root / "zoo.json")
    choice = PRESET if size == "full" else f"vit-b-32-standin-{size}"
    return StandIn(root=root, size=size, zoo=zoo, choice=choice, tasks=tuple(PAPER_TASKS), images=images)


# ---------------------------------------------------------------------------------------------------------------
# Models


def hub_file(hub: Path, repo: str, name: str, data: bytes, kind: str = "models") -> Path:
    """Write ``data`` as file ``name`` of hub repo ``repo`` in the hub cache layout (blob, snapshot symlink,
    refs/main); returns the snapshot path."""
    folder = hub / f"{kind}--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    link = folder / "snapshots" / commit / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def snapshot_folder(hub: Path, repo: str) -> Path:
    """The snapshot folder of hub repo ``repo`` written by :func:`hub_file`."""
    return hub / f"models--{repo.replace('/', '--')}" / "snapshots" / hashlib.sha1(repo.encode()).hexdigest()


def open_clip_to_hf_vision(tower: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip image-tower state dict in a transformers 4.x ``CLIPVisionModel``'s keys (no projection)."""
    from wemoe.zoo.hf_convert import _LAYER_RENAMES, _RENAMES

    renames = {v: k for k, v in _RENAMES.items()}
    layer_renames = {v: k for k, v in _LAYER_RENAMES.items()}
    out = {}
    for key, value in tower.items():
        if key == "proj":
            continue
        if key in renames:
            out[f"vision_model.{renames[key]}"] = value
            continue
        match = re.match(r"^transformer\.resblocks\.(\d+)\.(.+)$", key)
        layer, rest = match.group(1), match.group(2)
        prefix = f"vision_model.encoder.layers.{layer}."
        if rest.startswith("attn.in_proj_"):
            kind = rest.removeprefix("attn.in_proj_")
            for part, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{prefix}self_attn.{part}_proj.{kind}"] = chunk.contiguous()
        else:
            out[prefix + layer_renames[rest]] = value
    return out


def hf_vision_config(clip: torch.nn.Module) -> dict:
    """The ``config.json`` of a CLIPVisionModel shaped like ``clip``'s image tower (QuickGELU, as OpenAI's)."""
    visual = clip.visual
    blocks = visual.transformer.resblocks
    return {
        "architectures": ["CLIPVisionModel"],
        "model_type": "clip_vision_model",
        "hidden_act": "quick_gelu",
        "hidden_size": visual.conv1.out_channels,
        "intermediate_size": blocks[0].mlp.c_fc.out_features,
        "num_hidden_layers": len(blocks),
        "num_attention_heads": blocks[0].attn.num_heads,
        "image_size": visual.image_size[0],
        "patch_size": visual.patch_size[0],
        "num_channels": 3,
        "layer_norm_eps": 1e-5,
        "projection_dim": visual.proj.shape[1],
        "torch_dtype": "float32",
    }


def build_models(hub: Path, shape: Shape, tasks: list[str], seed: int = 0) -> dict:
    """Write the base and one expert per task into hub cache ``hub``; return the zoo spec that loads them (the
    preset's name for the full shape)."""
    import open_clip
    from safetensors.torch import save

    from wemoe.zoo.clip_models import create_clip

    torch.manual_seed(seed)
    if shape.model_config is None:
        clip, _, _ = create_clip("ViT-B-32", quick_gelu=True)
        model_config = {**open_clip.get_model_config("ViT-B-32"), "quick_gelu": True}
    else:
        clip, _, _ = create_clip(TINY_MODEL, model_config=shape.model_config)
        model_config = shape.model_config
    hub_file(hub, BASE_REPO, BASE_FILE, save({k: v.contiguous() for k, v in clip.state_dict().items()}))
    preprocess = {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "interpolation": "bicubic",
                  "resize_mode": "shortest"}
    hub_file(hub, BASE_REPO, BASE_CONFIG, json.dumps({"model_cfg": model_config, "preprocess_cfg": preprocess},
                                                     indent=2).encode())
    config = json.dumps(hf_vision_config(clip), indent=2).encode()
    tower = clip.visual.state_dict()
    experts = {}
    for i, task in enumerate(tasks):
        generator = torch.Generator().manual_seed(seed * 1000 + i + 1)
        state = {k: v + 0.01 * (v.std() if v.numel() > 1 else v.abs()) * torch.randn(v.shape, generator=generator)
                 for k, v in tower.items()}
        repo = EXPERT_REPO.format(task=task)
        hub_file(hub, repo, "config.json", config)
        hub_file(hub, repo, "model.safetensors", save(open_clip_to_hf_vision(state)))
        experts[task] = repo
        del state
    if shape.model_config is None:
        return {"name": PRESET}  # the preset itself: its hub ids are the ones written above
    return {"name": f"vit-b-32-standin-{shape.name}", "model": f"hf-hub:{BASE_REPO}", "quick_gelu": True,
            "experts": experts,
            "description": f"a {shape.name} stand-in of the paper's ViT-B/32 zoo (random; bench/standin_zoo.py)"}


# ---------------------------------------------------------------------------------------------------------------
# Datasets


def build_datasets(cache: Path, tasks: list[str], images: int, side: int, seed: int = 0) -> None:
    """Each task's test split as ``datasets`` caches a downloaded hub dataset, in datasets cache ``cache``: the real
    class names, ``images`` random ``side``-px RGB images (labels cycling through the classes)."""
    import datasets
    import numpy as np
    from datasets.packaged_modules.parquet.parquet import Parquet
    from PIL import Image

    from wemoe.tasks.standard_tasks import STANDARD_TASKS, read_classnames

    for i, task in enumerate(tasks):
        repo, config = STANDARD_TASKS[task][0], STANDARD_TASKS[task][1]
        classes = list(read_classnames(task))
        rng = np.random.default_rng(seed * 1000 + i)
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
        pictures = []
        for _ in range(images):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, format="PNG")
            pictures.append({"bytes": buffer.getvalue(), "path": None})
        data = datasets.Dataset.from_dict({"image": pictures, "label": [j % len(classes) for j in range(images)]},
                                          features=features)
        with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
            data.to_parquet(f"{tmp}/test.parquet")
            # the packaged Parquet builder writes what a download leaves (Arrow + dataset_info.json); only its folder
            # name differs: a download's is <owner>___<name>/<config>/<version>/<commit>
            builder = Parquet(cache_dir=f"{tmp}/cache", dataset_name=repo.split("/")[1],
                              config_name=config or "default", hash=hashlib.sha1(repo.encode()).hexdigest(),
                              data_files={"test": f"{tmp}/test.parquet"}, features=features)
            builder.download_and_prepare()
            built = Path(builder.cache_dir)
            target = cache / repo.replace("/", "___") / (config or "default") / built.parent.name / built.name
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(built), target)


def synthetic_tasks(names: list[str], classes: int, images: int, size: int) -> list:
    """In-memory tasks named ``names`` (no dataset read), each ``classes`` classes, one prompt template and ``images``
    random ``size``-px test images: for measuring a zoo's towers without its datasets' text heads."""
    import datasets
    import numpy as np
    from PIL import Image

    from wemoe.tasks.registry import Task

    out = []
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        classnames = [f"{name} class {c}" for c in range(classes)]
        data = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(images)],
             "label": [j % classes for j in range(images)]},
            features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classnames)}),
        )
        out.append(Task(name=name, classnames=tuple(classnames), templates=("a photo of a {c}.",),
                        load_split=lambda split, d=data: d, description="synthetic", source="memory"))
    return out


def main(argv: list[str] | None = None) -> StandIn:
    """Build (or find) a stand-in and print where it is and how to load it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SHAPES), default="full")
    parser.add_argument("--dir", type=Path, default=None, help=f"where (default: ${DIR_ENV}/<size> or ~/.cache)")
    parser.add_argument("--images", type=int, default=None, help="test images per task (default: the size's)")
    args = parser.parse_args(argv)
    standin = ensure_standin(args.size, args.dir, args.images, progress=print)
    print(f"stand-in {standin.size}: {standin.root}; load_zoo({standin.zoo!r}) or app.py --zoo {standin.zoo} with "
          + " ".join(f"{k}={v}" for k, v in standin.env().items()))
    return standin


if __name__ == "__main__":
    main()
