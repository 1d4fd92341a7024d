"""``python -m wemoe zoos``: every zoo (the shipped pocket zoos and the hub presets) with its tasks, its download
size and the memory each kind of merge needs, estimated before anything is loaded (``wemoe.zoo.memory_plan``).

    python -m wemoe zoos                      # a block per zoo
    python -m wemoe zoos --json zoos.json     # the same as JSON (bytes)
    python -m wemoe zoos --per-task 4         # adaptation steps of 4 images per task
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wemoe.zoo.memory_plan import (
    KIND_LABELS,
    KINDS,
    MemoryPlan,
    gb,
    memory_budget,
    plan,
    shape_of_config,
    shape_of_spec,
)
from wemoe.zoo.presets import PRESETS

CALIBRATION = ("Estimates: download = parameter counts x 4 bytes (float32 checkpoints); memory = a process's peak RSS, "
               "calibrated on bench/zoo_memory.py's measured ViT-B/32 eight-task zoo (bench/README.md, 'Memory of a "
               "real zoo') and extrapolated to other models and task counts; each merge's figure includes the zoo.")


ASSETS = Path(__file__).resolve().parents[2] / "assets"


def shipped_zoos(assets: Path = ASSETS) -> dict[str, dict]:
    """The zoos shipped under ``assets/`` (the pocket zoos): name -> manifest, from every ``assets/*/manifest.json``
    naming its zoo."""
    found = {}
    for path in sorted(assets.glob("*/manifest.json")):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a broken manifest: loading that zoo says what is wrong
        if isinstance(manifest, dict) and isinstance(manifest.get("name"), str):
            found[manifest["name"]] = manifest
    return found


def zoo_entries(per_task: int = 16) -> list[dict[str, Any]]:
    """One entry per zoo: name, where it comes from, description, tasks, and its :class:`MemoryPlan` (None when its
    shape is unknown)."""
    entries = []
    for name, manifest in shipped_zoos().items():
        tasks = list(manifest.get("tasks") or [])
        memory = None
        if isinstance(manifest.get("model"), dict) and tasks:
            shape = shape_of_config(name, manifest["model"], len(tasks), hf_experts=False)
            memory = plan(shape, per_task)
        entries.append({"name": name, "source": "shipped (assets/, offline)", "tasks": tasks, "plan": memory,
                        "description": manifest.get("description", ""), "files_bytes": manifest.get("total_bytes")})
    for name, spec in PRESETS.items():
        entries.append({"name": name, "source": "Hugging Face hub", "tasks": list(spec.experts),
                        "plan": plan(shape_of_spec(spec), per_task), "description": spec.description,
                        "files_bytes": None})
    return entries


def describe(entry: dict[str, Any], budget: int) -> list[str]:
    """The lines ``zoos`` prints for one zoo."""
    lines = [f"{entry['name']}  [{entry['source']}]", f"  tasks ({len(entry['tasks'])}): {', '.join(entry['tasks'])}"]
    memory: MemoryPlan | None = entry["plan"]
    if entry["files_bytes"]:
        lines.append(f"  download: none (shipped: {gb(entry['files_bytes'])} of files)")
    elif memory is not None:
        lines.append(f"  download: about {gb(memory.download)} (estimate)")
    if memory is None:
        lines.append("  memory: unknown (no model config in its manifest)")
        return lines

    def fits(size: int) -> str:
        return "" if size <= budget else "  (does not fit)"

    lines.append(f"  memory, estimated peak: load {gb(memory.load)}{fits(memory.load)}")
    for kind in KINDS:
        lines.append(f"    {KIND_LABELS[kind]:<44} {gb(memory.peak(kind)):>9}{fits(memory.peak(kind))}")
    step = f"+ an adaptation step of {memory.adapt_images} images"
    lines.append(f"    {step:<44} {gb(memory.adapt_step):>9}  (WEMoE, AdaMerging: over the merge's peak)")
    return lines


def command_zoos(args: argparse.Namespace) -> None:
    """Print every zoo with its tasks, download and memory (``--json``: also write them)."""
    budget, source = memory_budget()
    entries = zoo_entries(args.per_task)
    for entry in entries:
        print("\n".join(describe(entry, budget)))
    print(f"\n'does not fit': above {gb(budget)} ({source}); such a merge is refused before it starts.")
    print(CALIBRATION)
    if args.json:
        Path(args.json).write_text(json.dumps([_as_json(e, budget) for e in entries], indent=2))


def _as_json(entry: dict[str, Any], budget: int) -> dict[str, Any]:
    memory: MemoryPlan | None = entry["plan"]
    out = {k: entry[k] for k in ("name", "source", "description", "tasks")}
    if memory is not None:
        out.update(download_bytes=0 if entry["files_bytes"] else memory.download, load_bytes=memory.load,
                   merge_peak_bytes={kind: memory.peak(kind) for kind in KINDS},
                   adapt_step_bytes=memory.adapt_step, adapt_images=memory.adapt_images,
                   fits={kind: memory.peak(kind) <= budget for kind in KINDS}, budget_bytes=budget)
    return out


def add_zoos_command(commands: argparse._SubParsersAction) -> None:
    """Add ``zoos`` to the CLI's subcommands."""
    zoos = commands.add_parser("zoos", help="every zoo: tasks, download size and the memory each method needs")
    zoos.add_argument("--per-task", type=int, default=16, help="images per task in an adaptation step (default 16)")
    zoos.add_argument("--json", default=None, help="also write the list as JSON here (sizes in bytes)")
    zoos.set_defaults(run=command_zoos)
