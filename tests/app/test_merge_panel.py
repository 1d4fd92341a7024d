"""The merge panel's handlers: parameters checked before merging, the step time measured, a cancelled merge, as
plain functions on a tiny random zoo."""

import gradio as gr
import pytest

from app import handlers, jobs
from tests.app_support import router_state, same_state


def test_merge_checks_every_parameter_before_merging(session):
    with pytest.raises(gr.Error, match="out of range"):
        handlers.merge(session, ["task_arithmetic", "wemoe"], {"wemoe": {"lambda": 5.0}})
    with pytest.raises(gr.Error, match="at least one"):
        handlers.merge(session, [], {})
    assert session.bench.merges == {}


def test_merge_measures_a_step_without_changing_the_routers(merged):
    assert set(merged.bench.merges) == {"task_arithmetic", "wemoe"}
    assert merged.bench.merges["task_arithmetic"].params == {"lambda": 0.4}
    assert jobs.step_estimate(merged, "wemoe", 3) > 0
    before = router_state(merged)
    jobs.measure_step(merged, "wemoe", 3)
    assert same_state(before, router_state(merged))
    assert "Estimated time" in handlers.estimate(merged, "wemoe", 100, 3)
    assert "measured at its first step" in handlers.estimate(merged, "wemoe", 100, 7)


def test_a_cancelled_merge_changes_nothing(merged):
    """#14 item 5: Cancel during a merge keeps every merge (an adapted WEMoE keeps its steps), the chained
    adaptation does not run, and merging an adapted merge again says that its adaptation is replaced."""
    list(handlers.adapt(merged, "wemoe", 3, 1e-2, 3))
    before = dict(merged.bench.merges)
    routers = router_state(merged)

    def press_cancel_during_wemoe(fraction, desc=""):
        if "wemoe" in desc:
            assert handlers.cancelled(merged, "wemoe").startswith("Cancelled the merge")

    with pytest.raises(gr.Error, match="Merge cancelled: the session's merges are as they were"):
        handlers.merge(merged, ["task_arithmetic", "wemoe"], {"task_arithmetic": {"lambda": 0.9}}, per_task=3,
                       progress=press_cancel_during_wemoe)
    assert merged.bench.merges == before and merged.bench.merges["wemoe"].adapt_steps == 3
    assert merged.bench.merges["task_arithmetic"].params == {"lambda": 0.4}
    assert same_state(routers, router_state(merged))
    assert list(handlers.adapt_after_merge(merged, "wemoe", 5, 1e-2, 3)) == [(gr.skip(), gr.skip())]
    assert merged.bench.merges["wemoe"].adapt_steps == 3  # the adaptation chained to the merge did not start
    assert "Pressing Merge again replaces wemoe and its 3 adaptation steps" in handlers.estimate(merged, "wemoe", 10, 3)
    with pytest.warns(UserWarning, match="Replaced the adapted wemoe"):
        message = handlers.merge(merged, ["wemoe"], {}, per_task=3)
    assert "Replaced the adapted wemoe: its 3 adaptation steps are gone" in message
    assert merged.bench.merges["wemoe"].adapt_steps == 0
    assert merged.bench.merges["task_arithmetic"] is before["task_arithmetic"]
    *_, (done, _) = handlers.adapt_after_merge(merged, "wemoe", 2, 1e-2, 3)  # a merge that went through chains on
    assert done.startswith("Adapted wemoe: 2 steps")
