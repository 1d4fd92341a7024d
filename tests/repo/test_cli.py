"""The CLI: the table command's JSON report, method parameters, and clear errors."""

import json

import pytest

from wemoe.__main__ import main, parse_params
from wemoe.errors import WemoeError
from wemoe.methods import get_method


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
    for name, entry in methods.items():
        extra = {"adaptation"} if name == "wemoe" else set()
        assert set(entry) == {"average", "per_task", "params", "adapt_steps", "adapt_seconds"} | extra
        assert entry["average"] == pytest.approx(sum(entry["per_task"].values()) / 2, abs=0.01)
    assert methods["ties"]["params"]["top_k"] == 50.0
    assert methods["wemoe"]["adapt_steps"] == 2 and methods["wemoe"]["adapt_seconds"] > 0
    from wemoe.adaptation.adapt import SETTINGS  # every declared adaptation setting, by its declared name

    assert set(methods["wemoe"]["adaptation"]) == {p.name for p in SETTINGS}
    assert methods["wemoe"]["adaptation"]["steps"] == 2 and methods["wemoe"]["adaptation"]["loss"] == "entropy"
    assert methods["wemoe"]["params"] == get_method("wemoe").resolve()  # the method's own, nothing else
    assert "lambda_sweep" in methods["task_arithmetic"]["params"]  # no --lambda: best of a sweep
    assert "task_arithmetic" in capsys.readouterr().out


def test_every_seed_under_its_own_name(tiny_cli_zoo, tmp_path):
    import wemoe

    out = tmp_path / "r.json"
    argv = ["table", "--methods", "wemoe", "--adapt-steps", "1", "--per-task", "2", "--seed", "1", "--samples", "6",
            "--param", "wemoe.seed=3", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    run = report["run"]
    # --seed 1 draws the test images and each step's images; the routers are drawn with wemoe.seed 3
    assert run["seeds"] == {"test_images": 1, "adaptation_images": 1, "wemoe.seed": 3}
    assert report["methods"]["wemoe"]["params"]["seed"] == 3 and report["methods"]["wemoe"]["adaptation"]["seed"] == 1
    assert run["argv"] == argv and run["command"].startswith("python -m wemoe table --methods wemoe")
    assert run["wemoe_version"] == wemoe.__version__ and run["cpu"] and run["threads"] >= 1


def test_rerun_repeats_the_recorded_table(tiny_cli_zoo, tmp_path, capsys):
    first = tmp_path / "first.json"
    assert main(["table", "--methods", "pretrained,wemoe", "--adapt-steps", "2", "--per-task", "2",
                 "--param", "wemoe.seed=1", "--json", str(first)]) == 0
    again = tmp_path / "again.json"
    capsys.readouterr()
    assert main(["rerun", str(first), "--json", str(again)]) == 0
    assert "the same table, cell for cell" in capsys.readouterr().out
    cells = [{n: (m["per_task"], m["average"], m["params"]) for n, m in json.loads(path.read_text())["methods"].items()}
             for path in (first, again)]
    assert cells[0] == cells[1] and json.loads(again.read_text())["run"]["argv"][-1] == str(again)  # its own command
    recorded = json.loads(first.read_text())
    recorded["methods"]["wemoe"]["per_task"]["task0"] = -1.0  # a table the command does not make
    first.write_text(json.dumps(recorded))
    assert main(["rerun", str(first)]) == 1
    assert "wemoe task0: -1.0 then" in capsys.readouterr().out
    assert main(["rerun", str(tmp_path / "missing.json")]) == 2


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


def test_rerun_on_the_pocket_zoo_is_bit_for_bit(tmp_path, capsys):
    first = tmp_path / "pocket.json"
    argv = ["table", "--zoo", "pocket", "--tasks", "pocket_digits,pocket_shapes", "--methods", "pretrained,wemoe",
            "--adapt-steps", "3", "--per-task", "4", "--samples", "24", "--param", "wemoe.seed=1", "--json", str(first)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["rerun", str(first)]) == 0
    assert "the same table, cell for cell" in capsys.readouterr().out
    assert json.loads(first.read_text())["run"]["seeds"] == {"test_images": 0, "adaptation_images": 0, "wemoe.seed": 1}
