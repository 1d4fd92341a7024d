"""wemoe.evaluation.report: the results JSON of an accuracy table, in the format of `python -m wemoe table --json`."""

import json
import math

import pandas as pd

from wemoe.evaluation.report import build_report
from wemoe.workbench.workbench import MergeResult


def _table():
    table = pd.DataFrame({"a": [50.0, 90.123, 70.0], "b": [30.0, 80.0, math.nan]},
                         index=pd.Index(["pretrained", "experts", "wemoe"], name="model"))
    table["average"] = table.mean(axis=1)
    table.attrs["samples_per_task"] = {"a": 10, "b": 12}
    return table


def test_report_rows_numbers_and_merge_details():
    merge = MergeResult("wemoe", {"lambda": 0.3}, model=None, adapt_steps=7, adapt_seconds=1.2345)
    report = build_report("tiny", ["a", "b"], _table(), {"wemoe": merge})
    assert report["zoo"] == "tiny" and report["tasks"] == ["a", "b"]
    assert report["samples_per_task"] == {"a": 10, "b": 12}
    assert list(report["methods"]) == ["pretrained", "experts", "wemoe"]
    assert report["methods"]["experts"] == {"average": 85.06, "per_task": {"a": 90.12, "b": 80.0}, "params": {},
                                           "adapt_steps": 0, "adapt_seconds": 0.0}
    wemoe = report["methods"]["wemoe"]
    assert wemoe["per_task"] == {"a": 70.0, "b": None} and wemoe["average"] == 70.0  # a missing cell is null
    assert wemoe["params"] == {"lambda": 0.3} and wemoe["adapt_steps"] == 7 and wemoe["adapt_seconds"] == 1.23
    json.dumps(report, allow_nan=False)  # strict JSON: no NaN


def test_params_override():
    report = build_report("tiny", ["a", "b"], _table(), params={"pretrained": {"note": "zero-shot"}})
    assert report["methods"]["pretrained"]["params"] == {"note": "zero-shot"}
