"""The adaptation of the merge panel: settings, losses, step times, Cancel between steps and the loss plot, as plain
functions on a tiny random zoo."""

import gradio as gr
import pytest

from app import handlers, jobs
from app.session import Session
from tests.app_support import router_state, same_state


def test_adapt_needs_an_adaptive_merge(session):
    with pytest.raises(gr.Error, match="Merge with WEMoE first"):
        next(handlers.adapt(session, "wemoe", 3, 1e-3, 2))
    handlers.merge(session, ["task_arithmetic"], {})
    with pytest.raises(gr.Error, match="nothing to adapt"):
        next(handlers.adapt(session, "task_arithmetic", 3, 1e-3, 2))
    empty = Session()
    with pytest.raises(gr.Error, match="Load a zoo first"):
        next(handlers.adapt(empty, "wemoe", 3, 1e-3, 2))


def test_bad_adaptation_settings(merged):
    for steps, lr, per_task, message in [(0, 1e-3, 2, "Adaptation steps: enter a whole number from 1 to 5000"),
                                         (3, 0.0, 2, "Learning rate: enter a number from 1e-07 to 1"),
                                         (3, float("nan"), 2, "Learning rate"),
                                         (3, 1e-3, 0, "Images per task per step: enter a whole number from 1")]:
        with pytest.raises(gr.Error, match=message):
            next(handlers.adapt(merged, "wemoe", steps, lr, per_task))
    assert merged.bench.merges["wemoe"].adapt_steps == 0


def test_adaptation_loss_choice(merged):
    with pytest.raises(gr.Error, match="Unknown adaptation loss 'magic'"):
        next(handlers.adapt(merged, "wemoe", 2, 1e-3, 2, loss="magic"))
    before = merged.bench.merges["wemoe"].adapt_steps
    *_, (done, _) = handlers.adapt(merged, "wemoe", 2, 1e-3, 2, loss="im")
    assert merged.bench.merges["wemoe"].adapt_steps == before + 2 and "Adapted wemoe" in done


def test_stopping_adaptation_keeps_the_routers_of_the_last_step(merged):
    run = handlers.adapt(merged, "wemoe", 6, 5e-2, 3, update_every=0)  # a status after every step
    estimate, _ = next(run)  # measured when merging: said before the first step
    assert estimate.startswith("Adapting wemoe: 6 steps, about") and merged.bench.merges["wemoe"].adapt_steps == 0
    status, figure = next(run)
    assert "step 1/6" in status and "estimated total" in status and figure is not None
    next(run)
    after_two = router_state(merged)
    run.close()  # what Cancel does: the generator stops between steps
    result = merged.bench.merges["wemoe"]
    assert result.adapt_steps == 2 and len(result.history) == 2
    assert same_state(after_two, router_state(merged))
    assert "after step 2" in handlers.cancelled(merged, "wemoe")
    *_, (done, _) = handlers.adapt(merged, "wemoe", 2, 5e-2, 3)
    assert "2 steps" in done and result.adapt_steps == 4
    assert not same_state(after_two, router_state(merged))


def test_adaptation_refines_the_step_time_leaving_the_first_step_out(merged, monkeypatch):
    from wemoe.adaptation.adapt import AdaptStep

    result = merged.bench.merges["wemoe"]

    clock = iter([100.0, 105.0, 106.0, 107.0])  # each step's record arrives as late as the step took

    def fake_adapt(name, steps, **_):  # step 1 pays 4 s of warm-up, every later step takes 1 s
        for step, elapsed in enumerate([5.0, 6.0, 7.0][:steps], start=1):
            record = AdaptStep(step, 1.0, {"task0": 0.5}, elapsed)
            result.history.append(record)
            result.adapt_steps += 1
            yield record

    monkeypatch.setattr(merged.bench, "adapt", fake_adapt)
    monkeypatch.setattr(jobs, "step_clock", lambda: next(clock))
    updates = [status for status, _ in handlers.adapt(merged, "wemoe", 3, 1e-3, 3, update_every=0)]
    assert jobs.step_estimate(merged, "wemoe", 3) == pytest.approx(1.0)
    assert "step 2/3" in updates[2] and "about 1 s left" in updates[2] and "estimated total 7 s" in updates[2]
    assert "Estimated time: **100 s** for 100 steps" in handlers.estimate(merged, "wemoe", 100, 3)


def test_cancel_stops_a_running_adaptation_at_the_step_it_names(merged):
    """#14 item 4: Cancel (handlers.cancelled, what /cancel runs) stops the adaptation itself, between steps, and the
    step it names is the one the routers stay at, also when it comes in the middle of a step."""
    import threading
    import time

    updates: list = []
    worker = threading.Thread(
        target=lambda: updates.extend(handlers.adapt(merged, "wemoe", 2000, 1e-3, 3, update_every=0)))
    worker.start()
    result = merged.bench.merges["wemoe"]
    deadline = time.monotonic() + 60
    while result.adapt_steps < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    message = handlers.cancelled(merged, "wemoe")
    worker.join(timeout=60)
    assert not worker.is_alive(), "the adaptation went on after Cancel"
    kept = int(message.split("after step ")[1].rstrip("."))
    assert 2 <= kept == result.adapt_steps == len(result.history) < 2000
    assert updates[-1][0].startswith("Stopped after") and f"after step {kept}." in updates[-1][0]
    assert merged.job is None and "Nothing is running" in handlers.cancelled(merged, "wemoe")
    *_, (done, _) = handlers.adapt(merged, "wemoe", 2, 1e-3, 3)  # the next run is not stopped by the old Cancel
    assert done.startswith("Adapted wemoe: 2 steps") and result.adapt_steps == kept + 2


def test_the_loss_plot_names_its_loss_and_continues_the_steps(merged, config):
    """#14 item 8: the curve is titled by the loss used (IM values are not an entropy) and "Adapt more" continues
    the step axis instead of drawing over the first run."""
    *_, (_, first) = handlers.adapt(merged, "wemoe", 2, 1e-3, 2, loss="im")
    assert first.layout.title.text == "Adaptation: IM loss per step" and "IM loss" in first.layout.yaxis.title.text
    *_, (_, more) = handlers.adapt(merged, "wemoe", 3, 1e-3, 2, loss="im")
    assert [list(t.x) for t in more.data] == [[1, 2, 3, 4, 5]]
    assert list(more.data[0].y) == [r.loss for r in merged.bench.merges["wemoe"].history]
    *_, (_, mixed) = handlers.adapt(merged, "wemoe", 2, 1e-3, 2, loss="entropy")
    assert [list(t.x) for t in mixed.data] == [[1, 2, 3, 4, 5], [6, 7]]
    assert [t.name for t in mixed.data] == ["wemoe (IM loss)", "wemoe (entropy (the paper's))"]
    (_, curve, tasks, _, _), = list(handlers.routing(merged, "pca", config))
    assert [list(t.x) for t in curve.data] == [[1, 2, 3, 4, 5], [6, 7]] and list(tasks.data[0].x) == list(range(1, 8))
