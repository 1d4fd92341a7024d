"""The words the page writes about results: what is loaded, how long adaptation takes and what it did, the routers'
guess, what the routing map shows. Plain functions from library results to Markdown; nothing here computes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from app.errors import first_line
from wemoe.moe.layer import model_bytes

CACHED = "; computed earlier with the same settings, from the server's cache"
NO_ZOO = "Load a zoo first (step 1, 'Load zoo')."
ALL_TASKS = "all tasks together"


def _megabytes(tensors: Iterable[Any]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def tasks_table(tasks: Iterable[Any]) -> str:
    """Markdown: the custom tasks read (classes, test images, class names, where from, prompt)."""
    tasks = list(tasks)
    if not tasks:
        return "_No custom tasks: every expert must be named after a registered task._"
    rows = []
    for task in tasks:
        shown = ", ".join(task.classnames[:6]) + (", ..." if len(task.classnames) > 6 else "")
        where = task.source if task.source.startswith("hf:") else Path(task.source).name
        rows.append(f"| {task.name} | {len(task.classnames)} | {len(task.dataset('test'))} | {shown} | "
                    f"{where} | {task.templates[0]} |")
    header = "| task | classes | test images | class names | from | prompt |\n|---|---|---|---|---|---|\n"
    return f"**Read {len(tasks)} task{'s' if len(tasks) != 1 else ''}**\n\n{header}" + "\n".join(rows)


def zoo_summary(bench: Any | None) -> str:
    """Markdown: base, experts, tasks (classes, test images), parameter counts and memory of a workbench's zoo."""
    if bench is None:
        return "_Nothing loaded yet._"
    zoo = bench.zoo
    counts = zoo.parameter_count()
    memory = _megabytes(zoo.clip.state_dict().values()) + sum(_megabytes(s.values()) for s in zoo.experts.values())
    data = bench.data()
    info = zoo.info or {}
    base = info.get("model") or type(zoo.clip).__name__
    if info.get("pretrained"):
        base += f" ({info['pretrained']})"
    rows = "\n".join(
        f"| {t.name} | {len(t.classnames)} | {len(data[t.name])} | {', '.join(t.classnames[:4])}"
        f"{', ...' if len(t.classnames) > 4 else ''} |" for t in bench.tasks
    )
    return (
        f"**Loaded: {zoo.name}** ({zoo.description or 'no description'})\n\n"
        f"- Base model: {base}; image tower {counts['image_tower'] / 1e6:.2f} M parameters, text tower and rest "
        f"{counts['text_and_rest'] / 1e6:.2f} M\n"
        f"- Experts: {len(zoo.experts)} ({', '.join(zoo.task_names)}), {counts['experts'] / 1e6:.2f} M parameters "
        "together\n"
        f"- Memory for the weights: {memory:.1f} MiB\n\n"
        + _folded_when_long(f"| task | classes | test images used | class names |\n|---|---|---|---|\n{rows}",
                            len(bench.tasks), f"The {len(bench.tasks)} tasks: classes, test images, class names")
    )


FOLD_ROWS = 8
"""A table of more rows than this is folded under its summary line (20 tasks' rows took a whole screen)."""


def _folded_when_long(table: str, rows: int, summary: str) -> str:
    """``table`` as it is, or folded in a ``<details>`` block under ``summary`` when it has more than FOLD_ROWS rows."""
    if rows <= FOLD_ROWS:
        return table
    return f"<details><summary>{summary}</summary>\n\n{table}\n\n</details>"


def estimate(target: str, steps: int, per_task: int, seconds: float | None, adapted: int, device: str) -> str:
    """Markdown: how long ``steps`` steps of ``target`` should take (``seconds`` per step measured, or None), and
    that merging again would replace its ``adapted`` steps."""
    replaced = (f" Pressing Merge again replaces {target} and its {adapted} adaptation steps; 'Adapt more' continues "
                "from them." if adapted else "")
    if seconds is None:
        return (f"_The time per step of {target} with {per_task} images per task is measured at its first step._"
                f"{replaced}")
    return (f"Estimated time: **{seconds * steps:.0f} s** for {steps} steps of {target} on this {device} "
            f"({seconds:.3f} s per step measured).{replaced}")


def merged(made: dict[str, Any]) -> str:
    """The status line of a finished merge: each method, its time (or that it came from the cache) and the memory its
    model holds (WEMoE's exact and compressed experts side by side)."""
    return "Merged: " + ", ".join(f"{m} ({r.merge_seconds:.1f} s, {model_bytes(r.model) / 2**20:.1f} MB"
                                  f"{CACHED if r.from_cache else ''})" for m, r in made.items()) + "."


def replaced(method: str, steps: int) -> str:
    """Why an adapted merge is gone after merging again."""
    return (f"Replaced the adapted {method}: its {steps} adaptation steps are gone and the new {method} starts "
            "from step 0 ('Adapt more' continues an adapted merge instead).")


def adapt_starting(target: str, steps: int, seconds: float, device: str) -> str:
    """Before the first step, from the step time measured when merging."""
    return (f"Adapting {target}: {steps} steps, about {seconds * steps:.0f} s on this {device} "
            f"({seconds:.3f} s per step measured)...")


def adapt_waiting(target: str, steps: int, progress: str) -> str:
    """While another session computes this very run (its result then comes from the cache)."""
    return (f"Another session is computing this same adaptation ({target}, {steps} steps, the same settings): "
            f"{progress}. You get its result as soon as it is done.")


def adapt_progress(target: str, record: Any, steps: int, start_step: int, per_step: float, device: str) -> str:
    """After step ``record.step`` of ``steps``: the loss and the time left."""
    remaining = per_step * (steps - record.step)
    return (f"{target}: step {record.step}/{steps} (total {start_step + record.step}), loss {record.loss:.3f}; about "
            f"{remaining:.0f} s left on this {device} (estimated total {record.elapsed + remaining:.0f} s).")


def adapt_outcome(target: str, ran: int, steps: int, start_loss: float | None, result: Any, elapsed: float,
                  stopped: bool, failed: BaseException | None, split: str = "test") -> str:
    """The last status of an adaptation: finished, from the cache, stopped by Cancel or out of GPU time; ``split``
    ``heldout`` says the images adapted on were never scored."""
    change = f"loss {start_loss:.3f} -> {result.history[-1].loss:.3f}" if ran else "no step run"
    if split == "heldout" and ran:
        change += ", on held-out images"
    if failed is not None:
        return (f"**Out of GPU time after {ran} of {steps} steps** ({change}): the {target} routers are kept as they "
                f"were after step {result.adapt_steps}, the last finished chunk. Log in to Hugging Face for more GPU "
                f"quota, or adapt again with fewer steps. ({first_line(failed)})")
    if stopped:
        return (f"Stopped after {ran} of {steps} steps ({change}). The {target} routers are kept as they were after "
                f"step {result.adapt_steps}.")
    if result.from_cache:
        return (f"Adapted {target}: {ran} steps, {change} ({result.adapt_steps} steps in all). Computed earlier with "
                f"the same settings (it took {elapsed:.1f} s then): prepared for the class and shared from the "
                "server's cache.")
    return f"Adapted {target}: {ran} steps in {elapsed:.1f} s, {change} ({result.adapt_steps} steps in all)."


def no_heldout(tasks: list[str]) -> str:
    """Why held-out adaptation is refused for ``tasks``, and what to do instead."""
    return (f"Adaptation images: {', '.join(tasks)} have no held-out images here (only the pocket tasks ship unlabeled "
            "training images). Choose the scored test images, or score it from the command line with `python -m wemoe "
            "table --methods wemoe --adapt-split heldout`, which splits each test set in two (half adapts, half is "
            "scored).")


def guess_text(result: Any) -> str:
    """Markdown: the routers' guess for one image (a ``wemoe.evaluation.predictions.ImageClassification``) and which
    head its predictions use."""
    guess, name = result.guess, result.routed_by
    if guess is None:
        text = "_No guess: merge with WEMoE to see which task the routers think this image is from._"
    elif guess.task is None:
        advice = ("adapt first" if "same weight" in guess.why_not or "alike" in guess.why_not
                  else "merge again, and adapt with a smaller learning rate")
        text = (f"**No guess yet: {advice}.** The {name} routing of this image says nothing about its task: "
                f"{guess.why_not}.")
    else:
        runner_up = f" (next closest: {guess.ranked[1]})" if len(guess.ranked) > 1 else ""
        text = (f"**The routers' guess: {guess.task}**{runner_up}. This image's routing through {name}, over all "
                f"layers, is closest to the average routing of {guess.task} test images.")
        if guess.heaviest != guess.task:
            text += (f" The heatmap's largest weight, averaged over layers, is on another expert ({guess.heaviest}): "
                     "routers need not favour a task's own expert, so the guess compares whole routing patterns "
                     "instead.")
    if result.task is not None:
        how = "chosen by you" if result.task_chosen else "the routers' guess"
        return text + f"\n\nPredictions use the head of **{result.task}** ({how})."
    return text + (f"\n\nPredictions use the classes of **{ALL_TASKS}** (no task guessed); choose a task above to use "
                   "its head.")


def evaluation_note(counts: dict[str, int], cached: Sequence[str]) -> str:
    """Under the accuracy table: the test images per task, and which rows came from the cache."""
    note = "Test images per task: " + ", ".join(f"{t} {n}" for t, n in counts.items()) + "."
    if cached:
        note += f" Rows computed earlier with the same settings came from the server's cache: {', '.join(cached)}."
    return note


def routing_note(name: str, images: int, tasks: int, steps: int, agree: float, from_cache: bool) -> str:
    """Under the routing maps: what was routed and how often the most-weighted expert is the image's own task's."""
    note = (f"{images} test images of {tasks} tasks through {name} after {steps} adaptation steps. For "
            f"{100 * agree:.0f}% of them the most-weighted expert (layer average) is their own task's expert. "
            "Left map: images of one task should form a group; right map: do the routers' favourite experts follow "
            "those groups?")
    if from_cache:
        note += " Computed earlier with the same settings: the routing came from the server's cache."
    return note
