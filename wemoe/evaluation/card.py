"""An exported merge as a folder a person and the Hub can read: the weights, the merge's config, the results JSON and
a ``README.md`` model card (``huggingface_hub``'s ``ModelCard``) saying what it is, how it was made, how well it does,
the command that makes it again, and how to load it.

    folder/model.safetensors     open_clip CLIP (static merges) or the WEMoE format (wemoe.evaluation.export)
    folder/merge_config.json     zoo (base and expert sources), chosen experts, method, parameters, adaptation, version
    folder/results.json          the accuracy table (the format of ``python -m wemoe table --json``) and the config
    folder/README.md             the model card
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

import wemoe
from wemoe.evaluation.export import save_model
from wemoe.methods.matrix_merge import attention_layout

WEIGHTS, CONFIG, RESULTS, CARD = "model.safetensors", "merge_config.json", "results.json", "README.md"
CARD_FILES = (WEIGHTS, CONFIG, RESULTS, CARD)
LICENSE = "mit"  # the tool's; the weights inherit the base model's and the experts' terms (said in the card)


def merge_config(bench: Any, name: str, adaptation: Mapping[str, Any] | None, command: str) -> dict[str, Any]:
    """What made merge ``name`` of ``bench``: the zoo (its base and where each expert came from), the experts chosen,
    the method and its parameters (a per-matrix rule: the attention layout it saw, ``split`` or ``fused``, and the
    experts' own), the adaptation settings (None: not adapted), the tool's version, the command."""
    result = bench.merges[name]
    info = dict(bench.zoo.info)
    return {"zoo": bench.zoo.name, "base": {"model": info.get("model"), "pretrained": info.get("pretrained")},
            "experts": {t: (info.get("experts") or {}).get(t, "in memory") for t in bench.task_names},
            "tasks": list(bench.task_names), "method": result.method, "params": dict(result.params),
            **({"attention": attention_layout(bench.zoo, result.params["attention"]),
                "source_layout": bench.zoo.source_layout} if "attention" in result.params else {}),
            "adaptation": None if not result.adapt_steps else {**dict(adaptation or {}), "steps": result.adapt_steps},
            "wemoe_version": wemoe.__version__, "command": command}


def card_text(config: Mapping[str, Any], table: pd.DataFrame) -> str:
    """The model card's markdown (YAML metadata first), from the merge's config and its accuracy table."""
    from huggingface_hub import ModelCardData

    method = config["method"]
    data = ModelCardData(license=LICENSE, library_name="open_clip" if method != "wemoe" else None,
                         tags=["merge", "model-merging", "clip", method.replace("_", "-")],
                         pipeline_tag="zero-shot-image-classification")
    experts = "\n".join(f"- `{t}`: {source}" for t, source in config["experts"].items())
    params = ", ".join(f"`{k}={v}`" for k, v in config["params"].items()) or "the method's defaults"
    adaptation = config["adaptation"]
    adapted = ("not adapted" if not adaptation else
               ", ".join(f"{k} {v}" for k, v in adaptation.items()) + " (test-time adaptation on unlabeled images)")
    load = ("```python\nimport open_clip, torch\nfrom safetensors.torch import load_file\n"
            f"model, _, preprocess = open_clip.create_model_and_transforms({config['base']['model']!r})\n"
            "model.load_state_dict(load_file('model.safetensors'))\n```" if method != "wemoe" else
            "```python\nfrom wemoe.evaluation.export import load_wemoe\n"
            "tower = load_wemoe('model.safetensors', base_visual)  # base_visual: the base CLIP's image tower\n```")
    shown = table.round(2)
    rows = ["| model | " + " | ".join(shown.columns) + " |", "|---" * (len(shown.columns) + 1) + "|"]
    rows += [f"| {i} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for i, row in shown.iterrows()]
    body = f"""
# {method} merge of {len(config['tasks'])} CLIP experts ({config['zoo']})

Made with the merge explorer's library `wemoe` {config['wemoe_version']}: **{method}** merging the image towers of
{len(config['tasks'])} experts fine-tuned from the base `{config['base']['model']}`
(`{config['base']['pretrained'] or 'random weights'}`). Parameters: {params}. Adaptation: {adapted}.

## Experts

{experts}

## Accuracy (% of test images, zero-shot heads from the base's text tower)

{chr(10).join(rows)}

## Make it again

```bash
{config['command']}
```

## Load it

{load}

The weights inherit the terms of the base model and of every expert above.
"""
    return f"---\n{data.to_yaml()}\n---\n{body}"


def export_folder(folder: str | Path, bench: Any, name: str, table: pd.DataFrame, report: Mapping[str, Any],
                  adaptation: Mapping[str, Any] | None, command: str) -> Path:
    """Write merge ``name`` of ``bench`` with its config, results and card into ``folder`` (made if missing)."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(bench.zoo.clip, bench.merges[name].model, folder / WEIGHTS)
    config = merge_config(bench, name, adaptation, command)
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
    (folder / RESULTS).write_text(json.dumps({**report, "merge": config}, indent=2))
    ModelCard(card_text(config, table)).save(folder / CARD)
    return folder
