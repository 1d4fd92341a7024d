"""The CLI: the table command's JSON report, method parameters, and clear errors."""

import json

import pytest

from wemoe.__main__ import main, parse_params
from wemoe.errors import WemoeError


def test_table_writes_the_json_report(tiny_cli_zoo, tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(["table", "--zoo", "tiny", "--methods", "pretrained,experts,task_arithmetic,ties,wemoe,wemoe_oracle",
                 "--adapt-steps", "2", "--per-task", "3", "--param", "ties.top_k=50", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["zoo"] == "tiny" and report["tasks"] == ["task0", "task1"]
    assert report["samples_per_task"] == {"task0": 9, "task1": 9}
    methods = report["methods"]
    assert list(methods) == ["pretrained", "experts", "task_arithmetic", "ties", "wemoe", "wemoe_oracle"]
    for entry in methods.values():
        assert set(entry) == {"average", "per_task", "params", "adapt_steps", "adapt_seconds"}
        assert entry["average"] == pytest.approx(sum(entry["per_task"].values()) / 2, abs=0.01)
    assert methods["ties"]["params"]["top_k"] == 50.0
    assert methods["wemoe"]["adapt_steps"] == 2 and methods["wemoe"]["adapt_seconds"] > 0
    assert methods["wemoe"]["params"]["adapt_loss"] == "entropy"
    from wemoe.__main__ import ADAPT_FLAGS
    from wemoe.adaptation.adapt import SETTINGS  # every declared adaptation setting is reported, under its CLI name

    assert {ADAPT_FLAGS[p.name][1] for p in SETTINGS} <= set(methods["wemoe"]["params"])
    assert methods["wemoe"]["params"]["adapt_steps"] == 2
    assert "lambda_sweep" in methods["task_arithmetic"]["params"]  # no --lambda: best of a sweep
    assert "task_arithmetic" in capsys.readouterr().out


def test_fixed_lambda_skips_the_sweep(tiny_cli_zoo, tmp_path):
    out = tmp_path / "r.json"
    assert main(["table", "--methods", "task_arithmetic", "--lambda", "0.5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["methods"]["task_arithmetic"]["params"] == {"lambda": 0.5}


def test_merge_command_saves_a_model(tiny_cli_zoo, tmp_path):
    from wemoe.evaluation.export import read_metadata

    out = tmp_path / "w.safetensors"
    assert main(["merge", "--method", "wemoe", "--adapt-steps", "1", "--per-task", "2", "--out", str(out)]) == 0
    assert read_metadata(out)["wemoe_format"] == "wemoe"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["table", "--methods", "magic"], "Unknown merge method 'magic'. Known methods:"),
        (["table", "--methods", "ties", "--param", "ties.top_k=500"], "out of range"),
        (["table", "--methods", "ties", "--param", "ties.color=red"], "has no parameter 'color'"),
        (["table", "--param", "lambda=0.3"], "must look like method.name=value"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_parse_params_groups_by_method():
    assert parse_params(["wemoe.lambda=0.2", "ties.top_k=10"]) == {"wemoe": {"lambda": "0.2"}, "ties": {"top_k": "10"}}
    with pytest.raises(WemoeError):
        parse_params(["nope.x=1"])
