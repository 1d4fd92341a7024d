"""The stateless tools: each names everything it needs (zoo, experts, methods, parameters, adaptation settings) and
returns plain JSON-ready data; nothing is kept between calls except the toolbox's loaded zoos and result cache, so a
repeated call is answered from there.

Every tool is ``tool(arguments..., box=toolbox, progress=None)``. Values are checked by the library's own checks
before any work (the methods' ``resolve``, the adaptation settings' ``resolve_settings``, the zoo's ``chosen_tasks``)
and a bad one raises a :class:`~wemoe.errors.WemoeError` whose message says what to give instead. The docstrings are
written for a reader who has only the tool list (an assistant over MCP: ``app/mcp_tools.py`` serves them as they are):
every argument on one line of ``Args:`` with its meaning, range and default, then what comes back. The lines of the
adaptation settings are made from their declarations (``wemoe.adaptation.adapt.SETTINGS``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from wemoe.adaptation.adapt import SETTINGS, resolve_settings
from wemoe.errors import MethodError, TaskError
from wemoe.evaluation.evaluate import needs_task
from wemoe.evaluation.report import build_report
from wemoe.methods import get_method
from wemoe.methods import list_methods as method_names
from wemoe.params import Param
from wemoe.tasks.corruptions import CORRUPTIONS
from wemoe.tools.images import read_image
from wemoe.tools.toolbox import ProgressFn, Toolbox, no_progress

if TYPE_CHECKING:
    from wemoe.workbench.workbench import Workbench

# The workbench's built-in rows (wemoe.workbench.workbench's names; not imported: building an app's tool list loads no
# model code)
PRETRAINED, EXPERTS, ORACLE = "pretrained", "experts", "wemoe_oracle"

BUILT_IN = {PRETRAINED: "the pretrained CLIP, zero-shot (no merge)",
            EXPERTS: "each task's expert on its own task (the upper bound a merge aims at)",
            ORACLE: "WEMoE with each task routed to its own expert (a diagnostic; needs a wemoe merge, made if absent)"}
VIEW_IMAGES = Param("images_per_task", int, 48, "Test images per task a view scores (the app's analysis views: 48).",
                    min=1, max=100_000)
TOP_K = Param("top_k", int, 5, "Classes listed per model.", min=1, max=50)
TOP_K_PERCENT = Param("top_k_percent", float, 100.0, "Percent of each task vector kept before counting sign conflicts "
                      "(100: all; TIES keeps 20).", min=1.0, max=100.0)
SEVERITY = Param("severity", int, 3, "Corruption severity.", min=1, max=5)
SWEPT = ("task_arithmetic", "ties")
FOR_ORACLE = "wemoe"  # the merge the oracle row routes, made when the methods ask for the oracle but not for wemoe
ADAPT_ARGS = {"steps": "adapt_steps", "lr": "adapt_lr", "per_task": "adapt_per_task", "loss": "adapt_loss",
              "seed": "adapt_seed", "split": "adapt_split"}
"""The tools' argument for each adaptation setting."""


def _setting_line(setting: Param) -> str:
    allowed = f"One of {', '.join(setting.choices)}" if setting.choices else (
        f"From {setting.min:g} to {setting.max:g}" if setting.max is not None else f"At least {setting.min:g}")
    return f"{ADAPT_ARGS[setting.name]}: {setting.help} {allowed}; default {setting.default}."


ADAPT_DOC = ("\n" + " " * 8).join(_setting_line(s) for s in SETTINGS)
MODELS_DOC = ("methods: the models to build and score, a list of names: merge methods (list_methods gives them and "
              f"their parameters) and the built-in rows {', '.join(BUILT_IN)}; e.g. "
              '["pretrained", "task_arithmetic", "wemoe"].')
TASKS_DOC = ("tasks: the experts to merge, a list of at least two task names of the zoo (list_experts gives them); "
             "null or empty: every expert.")
PARAMS_DOC = ("params: each method's parameters, an object {method: {parameter: value}}, e.g. "
              '{"task_arithmetic": {"lambda": 0.3}}; a parameter left out takes its default (list_methods gives the '
              "ranges); null: every default.")
ZOO_DOC = "zoo: the zoo's name, one of those list_zoos gives (e.g. pocket, the offline one)."


def documented(fn: Callable) -> Callable:
    """Fill the shared argument lines (``{zoo}``, ``{tasks}``, ``{methods}``, ``{params}``, ``{adapt}``,
    ``{corruptions}``) into ``fn``'s docstring and join each argument's description into one line (an indented line
    continues the one above): a tool list reads one line per argument (gradio's docstring parser)."""
    doc = (fn.__doc__ or "").format(zoo=ZOO_DOC, tasks=TASKS_DOC, methods=MODELS_DOC, params=PARAMS_DOC,
                                    adapt=ADAPT_DOC, corruptions=", ".join(CORRUPTIONS))
    lines: list[str] = []
    indent: int | None = None  # of the argument lines, inside Args:
    for line in doc.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("Args:", "Returns:")):
            indent = -1 if stripped == "Args:" else None
        elif indent is not None and stripped:
            depth = len(line) - len(line.lstrip())
            indent = depth if indent < 0 else indent
            if depth > indent:
                lines[-1] += " " + stripped
                continue
        lines.append(line)
    fn.__doc__ = "\n".join(lines)
    return fn


# Checks ----------------------------------------------------------------------------------------------------------


def _names(value: Any, what: str, example: str) -> list[str]:
    """A list of names given as a list of strings or one comma-separated string (None or empty: [])."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise MethodError(f"{what}: give a list of names, e.g. {example}; got {str(value)[:80]!r}.")
    return list(dict.fromkeys(v.strip() for v in value if v.strip()))


def _tasks(tasks: Any) -> list[str] | None:
    """The chosen experts (None: all); the zoo checks them (``chosen_tasks``) when the workbench opens."""
    return _names(tasks, "tasks", '["pocket_digits", "pocket_shapes"]') or None


def _models(methods: Any, params: Any, merges_only: bool = False) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """``(model names, {merge method: resolved parameters})``, every method and parameter checked by its method
    (an unknown name, parameter or value: a MethodError saying what is allowed). The oracle row needs a wemoe merge:
    one is added (under :data:`FOR_ORACLE`, not adapted: the oracle routes by the task, not by the routers)."""
    names = _names(methods, "methods", '["pretrained", "task_arithmetic"]')
    if not names:
        raise MethodError(f"methods: choose at least one of {', '.join([*BUILT_IN, *method_names()])}.")
    if params is None:
        params = {}
    if not isinstance(params, Mapping) or not all(isinstance(v, Mapping) or v is None for v in params.values()):
        raise MethodError('params: give an object {method: {parameter: value}}, e.g. {"ties": {"top_k": 20}}.')
    merges = [n for n in names if n not in BUILT_IN]
    for name in params:
        get_method(name)  # an unknown method: the registry's message listing the known ones
        if name not in merges and not (name == "wemoe" and ORACLE in names):
            raise MethodError(f"params names {name!r}, which is not among the methods ({', '.join(names)}).")
    resolved = {name: get_method(name).resolve(params.get(name)) for name in merges}
    if ORACLE in names and "wemoe" not in merges:
        resolved[FOR_ORACLE] = get_method("wemoe").resolve(params.get("wemoe"))
    if merges_only:
        names = merges
    return names, resolved


def _settings(steps: Any, lr: Any, per_task: Any, loss: Any, seed: Any, split: Any) -> dict[str, Any]:
    """The adaptation settings checked against their declarations (a MethodError naming the argument)."""
    given = {"steps": steps, "lr": lr, "per_task": per_task, "loss": loss, "seed": seed, "split": split}
    try:
        return resolve_settings(given)
    except MethodError as error:
        message = str(error)
        for setting, argument in ADAPT_ARGS.items():
            message = message.replace(f"adapt.{setting}", argument)
        raise MethodError(message) from None


def _oracle_only(names: list[str]) -> set[str]:
    """The merge made only for the oracle row (the methods ask for the oracle but not for wemoe), else none."""
    return {FOR_ORACLE} if ORACLE in names and FOR_ORACLE not in names else set()


def _value(param: Param, value: Any) -> Any:
    """``value`` parsed and checked by ``param`` (None: its default)."""
    return param.parse(param.default if value is None else value)


# Building the models ---------------------------------------------------------------------------------------------


def _build(bench: Workbench, resolved: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any], box: Toolbox,
           progress: ProgressFn, names: list[str], share: float = 0.8) -> dict[str, dict[str, Any]]:
    """Merge every method into ``bench`` (from the cache when made before) and adapt the adaptive ones with
    ``settings`` (``steps`` 0: not adapted); what each one was: ``{method: {"from_cache": bool}}``. Progress goes
    from 0 to ``share``. A wemoe merge made for the oracle row only (``names``: the rows) is not adapted."""
    made: dict[str, dict[str, Any]] = {}
    count = max(1, len(resolved))
    for index, (method, params) in enumerate(resolved.items()):
        start = share * index / count
        progress(start, f"merging {method}")
        result = bench.merge(method, params)
        if result.adaptive and settings["steps"] > 0 and method not in _oracle_only(names):
            steps = settings["steps"]
            run = bench.adapt(method, **settings, device=box.device, report_waiting=True)
            for record in box.pace(run):
                if getattr(record, "counts_as_step", True):
                    progress(start + share / count * record.step / steps,
                             f"adapting {method}: step {record.step}/{steps}, loss {record.loss:.3f}")
                else:
                    progress(start, f"adapting {method}: the same run is being computed for another caller "
                                    f"({record.progress})")
        made[method] = {"from_cache": bool(result.from_cache)}
    return made


def _bench(box: Toolbox, zoo: Any, tasks: Any, progress: ProgressFn) -> Workbench:
    progress(0.0, f"opening the {zoo} zoo")
    return box.bench(box.check_zoo(zoo), _tasks(tasks), lambda f, m: progress(0.0, m))


# The tools -------------------------------------------------------------------------------------------------------


def list_zoos(*, box: Toolbox, progress: ProgressFn | None = None) -> dict:
    """The zoos this server can merge from: a pretrained CLIP and one fine-tuned expert per task each.

    Returns:
        {"zoos": [{"name": ..., "description": ...}]}; give a name as the zoo argument of the other tools.
    """
    return {"zoos": [{"name": name, "description": label} for name, (label, _) in box.zoos.items()]}


@documented
def list_experts(zoo: str, *, box: Toolbox, progress: ProgressFn | None = None) -> dict:
    """The experts (tasks) of a zoo with their classes and number of test images; loads the zoo on first use.

    Args:
        {zoo}

    Returns:
        {{"zoo": ..., "experts": [{{"task": name, "classes": [class names], "test_images": count}}]}}; the task names
        are what the tasks argument of the other tools takes.
    """
    progress = progress or no_progress
    bench = _bench(box, zoo, None, progress)
    data = bench.data()
    return {"zoo": zoo, "experts": [{"task": t.name, "classes": list(t.classnames), "test_images": len(data[t.name])}
                                    for t in bench.tasks]}


def list_methods(*, box: Toolbox, progress: ProgressFn | None = None) -> dict:
    """The merge methods with their declared parameters, the built-in rows of an accuracy table and the adaptation
    settings of adaptive methods (wemoe, adamerging).

    Returns:
        {"methods": [{"name", "pretty_name", "description", "reference", "adaptive", "params": [{"name", "type",
        "default", "min", "max", "choices", "help"}]}], "built_in": {name: meaning}, "adaptation": [the same fields
        for each adaptation setting, with the tool argument that sets it]}.
    """

    def declared(param: Param) -> dict[str, Any]:
        return {"name": param.name, "type": param.type.__name__, "default": param.default, "min": param.min,
                "max": param.max, "choices": list(param.choices) if param.choices else None, "help": param.help}

    methods = [get_method(name) for name in method_names()]
    return {
        "methods": [{"name": m.name, "pretty_name": m.pretty_name, "description": m.description,
                     "reference": m.reference_url, "adaptive": m.adaptive, "params": [declared(p) for p in m.params]}
                    for m in methods],
        "built_in": dict(BUILT_IN),
        "adaptation": [{**declared(s), "argument": ADAPT_ARGS[s.name]} for s in SETTINGS],
    }


@documented
def merge_and_evaluate(
    zoo: str,
    methods: list[str],
    tasks: list[str] | None = None,
    params: dict | None = None,
    adapt_steps: int = 300,
    adapt_lr: float = 1e-3,
    adapt_per_task: int = 16,
    adapt_loss: str = "entropy",
    adapt_seed: int = 0,
    adapt_split: str = "test",
    *,
    box: Toolbox,
    progress: ProgressFn | None = None,
) -> dict:
    """Merge the chosen experts of a zoo with each method, adapt the adaptive ones (wemoe, adamerging) on unlabeled
    test images, and score every model on every task: the accuracy table, as python -m wemoe table gives it.

    Results already computed in this process with the same inputs come from its cache at once (from_cache). Adapting
    takes about 0.1-0.2 s per step on the pocket zoo on a CPU, much longer on ViT zoos.

    Args:
        {zoo}
        {methods}
        {tasks}
        {params}
        {adapt}

    Returns:
        {{"zoo", "tasks": [task names], "samples_per_task": {{task: test images scored}}, "methods": {{model:
        {{"average": percent, "per_task": {{task: percent}}, "params": {{resolved parameters}}, "adapt_steps",
        "adapt_seconds", "from_cache"}}}}, "adaptation": {{the settings used}} or null when nothing adapted}};
        accuracies in percent.
    """
    progress = progress or no_progress
    settings = _settings(adapt_steps, adapt_lr, adapt_per_task, adapt_loss, adapt_seed, adapt_split)
    names, resolved = _models(methods, params)
    bench = _bench(box, zoo, tasks, progress)
    made = _build(bench, resolved, settings, box, progress, names)
    table = bench.evaluate(names, progress=lambda f, m: progress(0.8 + 0.2 * f, m))
    report = build_report(zoo, bench.task_names, table, bench.merges)
    for name in made:
        if name in report["methods"]:
            report["methods"][name]["from_cache"] = made[name]["from_cache"]
            if needs_task(bench.merges[name].model):
                report["methods"][name]["task_given"] = True  # e.g. EMR-Merging: each task's images to its own model
    adapted = any(bench.merges[m].adapt_steps for m in made)
    report["adaptation"] = {ADAPT_ARGS[k]: v for k, v in settings.items()} if adapted else None
    return report


@documented
def classify_image(
    zoo: str,
    image: str,
    methods: list[str],
    tasks: list[str] | None = None,
    params: dict | None = None,
    task: str | None = None,
    top_k: int = 5,
    adapt_steps: int = 300,
    adapt_lr: float = 1e-3,
    adapt_per_task: int = 16,
    adapt_loss: str = "entropy",
    adapt_seed: int = 0,
    adapt_split: str = "test",
    *,
    box: Toolbox,
    progress: ProgressFn | None = None,
) -> dict:
    """Classify one image with the pretrained model, each merge and each expert; with a wemoe merge also how its
    routers weigh the experts for this image and which task they guess. The merges are made (and adapted) as
    merge_and_evaluate makes them, from the cache when made before.

    Args:
        {zoo}
        image: the image, as base64 of a PNG or JPEG file (plain or a data:image/...;base64, URI) or an http(s) URL
            of one (at most 20 MB and 40 megapixels unless the server says otherwise; a URL must answer within 10 s).
        methods: the merges to classify with, a list of merge method names (list_methods), e.g. ["task_arithmetic",
            "wemoe"]; the pretrained model and the experts are always included.
        {tasks}
        {params}
        task: the task whose classes to choose from (one of the chosen experts' tasks); null: the wemoe routers'
            guess when there is a wemoe merge, else every task's classes together.
        top_k: classes listed per model, 1 to 50; default 5.
        {adapt}

    Returns:
        {{"zoo", "tasks", "task": the task whose classes were used (null: every task's), "task_chosen": whether it was
        given, "models": {{model: [{{"label", "task", "probability"}}]}}, "experts": {{task: [...]}}, "routing":
        {{"merge", "blocks", "weights": [[one weight per expert] per routed block], "experts"}} or null, "guess":
        {{"task", "ranked", "heaviest", "why_not"}} or null}}.
    """
    progress = progress or no_progress
    settings = _settings(adapt_steps, adapt_lr, adapt_per_task, adapt_loss, adapt_seed, adapt_split)
    k = _value(TOP_K, top_k)
    _, resolved = _models(methods, params, merges_only=True)
    if task is not None and (not isinstance(task, str)):
        raise TaskError(f"task: give a task name or null, got {str(task)[:40]!r}.")
    picture = read_image(image, box.max_image_bytes, box.max_pixels, box.url_seconds, box.image_roots, box.served)
    bench = _bench(box, zoo, tasks, progress)
    _build(bench, resolved, settings, box, progress, [], share=0.9)
    progress(0.9, "classifying")
    (seen,) = bench.classify([picture], task=task or None, k=k)

    def ranked(r: Any) -> list[dict[str, Any]]:
        return [{"label": label, "task": t, "probability": round(float(p), 6)}
                for label, t, p in zip(r.labels, r.tasks, r.probabilities, strict=True)]

    routing = None
    if seen.routed_by is not None and seen.routing is not None:
        routing = {"merge": seen.routed_by, "blocks": list(seen.layers), "experts": bench.task_names,
                   "weights": [[round(float(w), 6) for w in row] for row in seen.routing.tolist()]}
    guess = None if seen.guess is None else {"task": seen.guess.task, "ranked": list(seen.guess.ranked),
                                             "heaviest": seen.guess.heaviest, "why_not": seen.guess.why_not}
    return {"zoo": zoo, "tasks": bench.task_names, "task": seen.task, "task_chosen": seen.task_chosen,
            "models": {name: ranked(r) for name, r in seen.models.items()},
            "experts": {name: ranked(r) for name, r in seen.experts.items()}, "routing": routing, "guess": guess}


@documented
def interference(zoo: str, tasks: list[str] | None = None, top_k_percent: float = 100.0, *, box: Toolbox,
                 progress: ProgressFn | None = None) -> dict:
    """How the experts' task vectors (expert minus pretrained weights) interfere: their cosine similarity, the share of
    parameters whose signs conflict (TIES' notion) and their norms, whole and per block. No model is run.

    Args:
        {zoo}
        {tasks}
        top_k_percent: percent of each task vector kept (largest entries) before counting sign conflicts, 1 to 100;
            100 keeps all, TIES keeps 20; default 100.

    Returns:
        {{"zoo", "tasks", "blocks", "top_k", "cosine": [[task x task]], "block_cosine": {{block: [[...]]}},
        "sign_conflicts": {{block: share}}, "norms": {{task: {{block: norm}}}}}}.
    """
    from wemoe.analysis.interference import interference as compute

    progress = progress or no_progress
    top_k = _value(TOP_K_PERCENT, top_k_percent)
    bench = _bench(box, zoo, tasks, progress)
    found, _ = bench.cached(("interference", float(top_k)), lambda: compute(bench.zoo, top_k))  # the app's key
    return {"zoo": zoo, **found.to_dict()}


@documented
def lambda_sweep(zoo: str, tasks: list[str] | None = None, methods: list[str] | None = None,
                 images_per_task: int = 48, params: dict | None = None, *, box: Toolbox,
                 progress: ProgressFn | None = None) -> dict:
    """Accuracy per task of task arithmetic and TIES as their scaling lambda goes 0, 0.1, ..., 1.0 (the merged
    direction computed once per method), on a sample of each task's test images.

    Args:
        {zoo}
        {tasks}
        methods: which of task_arithmetic and ties to sweep, a list; null: both.
        images_per_task: test images per task scored at each lambda, 1 to 100000; default 48 (what the app's view
            uses).
        params: the other parameters of the swept methods, e.g. {{"ties": {{"top_k": 20}}}}; null: their defaults.

    Returns:
        {{"zoo", "lambdas": [...], "per_task", "chosen": {{method: its default lambda}}, "best": {{method: the lambda
        with the best average}}, "accuracy": {{method: {{lambda: {{task: percent, "average": percent}}}}}}}}.
    """
    from wemoe.analysis.sweep import lambda_sweep as sweep

    progress = progress or no_progress
    swept = _names(methods, "methods", '["task_arithmetic", "ties"]') or list(SWEPT)
    other = [m for m in swept if m not in SWEPT]
    if other:
        raise MethodError(f"methods: the sweep covers {', '.join(SWEPT)}, not {', '.join(other)}.")
    _, resolved = _models(swept, params)
    count = _value(VIEW_IMAGES, images_per_task)
    bench = _bench(box, zoo, tasks, progress)
    plain = tuple(swept) == SWEPT and not params
    key = ("lambda_sweep", count) if plain else ("lambda_sweep", tuple(swept), count,
                                                   tuple((m, tuple(sorted(p.items()))) for m, p in resolved.items()))
    found, _ = bench.cached(key, lambda: sweep(bench, swept, per_task=count, params=resolved))
    return {"zoo": zoo, **found.to_dict()}


@documented
def cross_accuracy(zoo: str, tasks: list[str] | None = None, images_per_task: int = 48, *, box: Toolbox,
                   progress: ProgressFn | None = None) -> dict:
    """Each expert scored on every task (rows: experts, columns: tasks): the diagonal is what each expert was tuned
    for, the rest how much fine-tuning on one task helps or hurts the others.

    Args:
        {zoo}
        {tasks}
        images_per_task: test images per task scored, 1 to 100000; default 48.

    Returns:
        {{"zoo", "per_task", "accuracy": {{expert: {{task: percent, "average": percent}}}}}}.
    """
    from wemoe.analysis.cross_accuracy import cross_accuracy as compute
    from wemoe.analysis.robustness import table_to_dict
    from wemoe.evaluation.sample_eval import sample_data

    progress = progress or no_progress
    count = _value(VIEW_IMAGES, images_per_task)
    bench = _bench(box, zoo, tasks, progress)
    table, _ = bench.cached(("cross_accuracy", count), lambda: compute(
        bench.loaded.expert_towers(), sample_data(bench.data(), count), bench.heads()))
    return {"zoo": zoo, "per_task": count, "accuracy": table_to_dict(table)}


@documented
def robustness(
    zoo: str,
    methods: list[str],
    corruption: str = "gaussian_noise",
    severity: int = 3,
    tasks: list[str] | None = None,
    params: dict | None = None,
    images_per_task: int = 48,
    adapt_steps: int = 300,
    adapt_lr: float = 1e-3,
    adapt_per_task: int = 16,
    adapt_loss: str = "entropy",
    adapt_seed: int = 0,
    adapt_split: str = "test",
    *,
    box: Toolbox,
    progress: ProgressFn | None = None,
) -> dict:
    """Every model's accuracy on clean test images and under one of FusionBench's seven corruptions; with a wemoe
    merge also how far its routing moves and whether its task guess survives the corruption.

    Args:
        {zoo}
        {methods}
        corruption: one of {corruptions}; default gaussian_noise.
        severity: how strong the corruption is, 1 to 5; default 3.
        {tasks}
        {params}
        images_per_task: test images per task scored, 1 to 100000; default 48.
        {adapt}

    Returns:
        {{"zoo", "corruption", "severity", "per_task", "accuracy": {{"clean" or the corruption: {{model: {{task:
        percent, "average": percent}}}}}}, "routing_shift": {{"merge", task: {{"distance", "guess_survives",
        "guess_right_clean", "guess_right_corrupted"}}}} or null}}.
    """
    from wemoe.analysis.robustness import robustness_table, routing_shift, table_to_dict
    from wemoe.tasks.corruptions import check

    progress = progress or no_progress
    settings = _settings(adapt_steps, adapt_lr, adapt_per_task, adapt_loss, adapt_seed, adapt_split)
    names, resolved = _models(methods, params)
    level, count = _value(SEVERITY, severity), _value(VIEW_IMAGES, images_per_task)
    if not isinstance(corruption, str):
        raise MethodError(f"corruption: choose one of {', '.join(CORRUPTIONS)}, got {str(corruption)[:40]!r}.")
    check(corruption, level)  # an unknown corruption: its message lists the known ones
    bench = _bench(box, zoo, tasks, progress)
    _build(bench, resolved, settings, box, progress, names)
    progress(0.8, f"scoring under {corruption}")
    routed = bench.routed_merge()
    keys = tuple(bench.merge_key(n) if n not in BUILT_IN else (n, bench.merge_key(routed) if n == ORACLE else "")
                 for n in names)
    key = None if any(k is None or k[-1] is None for k in keys) else ("robustness", corruption, level, count, keys)

    def compute() -> tuple[pd.DataFrame, pd.DataFrame | None]:
        table = robustness_table(bench, names, [corruption], level, count)
        return table, (routing_shift(bench, routed, corruption, level, count) if routed else None)

    table, shift = bench.cached(key, compute)[0]
    return {"zoo": zoo, "corruption": corruption, "severity": level, "per_task": count,
            "accuracy": table_to_dict(table),
            "routing_shift": None if shift is None else {"merge": routed, **table_to_dict(shift)}}


@documented
def cost(
    zoo: str,
    methods: list[str],
    tasks: list[str] | None = None,
    params: dict | None = None,
    images_per_task: int = 48,
    adapt_steps: int = 300,
    adapt_lr: float = 1e-3,
    adapt_per_task: int = 16,
    adapt_loss: str = "entropy",
    adapt_seed: int = 0,
    adapt_split: str = "test",
    *,
    box: Toolbox,
    progress: ProgressFn | None = None,
) -> dict:
    """What each model costs next to what it scores: average accuracy, parameters beyond one CLIP image tower, and
    the seconds spent merging and adapting it (is WEMoE worth it?).

    Args:
        {zoo}
        {methods}
        {tasks}
        {params}
        images_per_task: test images per task scored, 1 to 100000; default 48 (what the app's view uses).
        {adapt}

    Returns:
        {{"zoo", "per_task", "cost": {{model: {{"average_accuracy", "parameters", "extra_parameters",
        "extra_vs_one_model", "merge_seconds", "adapt_steps", "adapt_seconds"}}}}}}; seconds are those of the run that
        made the model (near 0 for a merge from the cache).
    """
    from wemoe.analysis.cost import cost_table
    from wemoe.analysis.robustness import table_to_dict

    progress = progress or no_progress
    settings = _settings(adapt_steps, adapt_lr, adapt_per_task, adapt_loss, adapt_seed, adapt_split)
    names, resolved = _models(methods, params)
    count = _value(VIEW_IMAGES, images_per_task)
    bench = _bench(box, zoo, tasks, progress)
    _build(bench, resolved, settings, box, progress, names)
    progress(0.8, "scoring")
    # the app's cost view's scores (Workbench.sample_scores): shared with the page
    accuracy = pd.DataFrame.from_dict(bench.sample_scores(names, count), orient="index")
    table = cost_table(bench, accuracy)
    return {"zoo": zoo, "per_task": count, "cost": table_to_dict(table)}


TOOLS = (list_zoos, list_experts, list_methods, merge_and_evaluate, classify_image, interference, lambda_sweep,
         cross_accuracy, robustness, cost)
"""Every tool, in the order a tool list shows them."""


def run(name: str, arguments: Mapping[str, Any], box: Toolbox, progress: ProgressFn | None = None) -> dict:
    """Call the tool ``name`` with ``arguments`` (a JSON object's fields), as an assistant would."""
    tools = {fn.__name__: fn for fn in TOOLS}
    if name not in tools:
        raise MethodError(f"Unknown tool {name!r}. Tools: {', '.join(tools)}.")
    return tools[name](**dict(arguments), box=box, progress=progress)

