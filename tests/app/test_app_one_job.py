"""One model job per session, cancels that stop the computation, estimates from the latest steps (#27 items 7-11)."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import gradio as gr
import pytest

from app import handlers, jobs
from app.shared import StepTimes
from tests.app_support import launched
from tests.helpers import tiny_zoo
from wemoe.stopping import Stopped


@pytest.fixture
def adapted(session):
    """A session with task arithmetic and a WEMoE adapted 2 steps (config and session: tests/app/conftest.py)."""
    handlers.merge(session, ["task_arithmetic", "wemoe"], {}, per_task=3)
    list(handlers.adapt(session, "wemoe", 2, 1e-2, 3, update_every=0))
    return session


def _state(session):
    return {name: (result.adapt_steps, id(result)) for name, result in session.bench.merges.items()}


def test_merge_and_load_are_refused_while_the_session_adapts(adapted, config):
    before = _state(adapted)
    steps = handlers.adapt(adapted, "wemoe", 50, 1e-2, 3, update_every=0)
    next(steps)  # the adaptation runs (between two of its steps)
    try:
        with pytest.raises(gr.Error, match="adapting wemoe"):
            handlers.merge(adapted, ["task_arithmetic"], {}, per_task=3)
        with pytest.raises(gr.Error, match="adapting wemoe"):
            handlers.load_zoo(adapted, config, "tiny2")
        assert handlers.cancelled(adapted, "wemoe").startswith("Stopped.")  # Cancel names the adaptation
    finally:
        steps.close()
    assert set(_state(adapted)) == set(before) and adapted.zoo_name == "tiny"
    assert adapted.bench.merges["task_arithmetic"] is not None


def test_merge_is_refused_while_the_session_loads(adapted):
    before = _state(adapted)
    job = adapted.begin("load", "tiny2")  # what handlers.load_zoo holds while the zoo loads
    try:
        with pytest.raises(gr.Error, match="loading the tiny2 zoo"):
            handlers.merge(adapted, ["task_arithmetic"], {}, per_task=3)
        assert "cannot be stopped halfway" in handlers.cancelled(adapted)
    finally:
        adapted.finish(job)
    assert _state(adapted) == before


def test_a_cancelled_looping_merge_stops_computing_and_replaces_nothing(adapted, monkeypatch):
    import wemoe.methods.wudi as wudi

    steps, cancel_at = [], 40
    real_check = wudi.check_stop

    def counted():
        steps.append(1)
        if len(steps) == cancel_at:
            handlers.cancelled(adapted)  # the page's Cancel (or /cancel) while WUDI takes its Adam steps
        real_check()

    monkeypatch.setattr(wudi, "check_stop", counted)
    before = _state(adapted)
    with pytest.raises(gr.Error, match="Merge cancelled"):
        handlers.merge(adapted, ["wemoe", "wudi"], {"wudi": {"steps": 5000}}, per_task=3)
    assert len(steps) == cancel_at  # not one Adam step after the cancel (5000 per matrix otherwise)
    assert _state(adapted) == before and adapted.running() is None


def test_a_stopped_build_caches_nothing(adapted):
    bench = adapted.bench
    with pytest.raises(Stopped):
        bench.build("wudi", {"steps": 50}, stop=lambda: True)
    made = bench.build("wudi", {"steps": 50})
    assert not made.from_cache  # the stopped build left nothing behind for others


def test_closing_an_event_beside_its_work_abandons_the_work():
    """A client-side cancel closes the event's generator: the work beside it is told to stop."""
    release, abandoned = threading.Event(), threading.Event()

    def work():
        release.wait(10)
        return "done"

    ticks = jobs.run_beside(work, abandoned.set, every=0.01)
    next(ticks)
    ticks.close()
    assert abandoned.is_set()
    release.set()
    finished = jobs.run_beside(lambda: 42, abandoned.clear, every=0.01)
    with pytest.raises(StopIteration) as done:
        next(finished)
    assert done.value.value == 42 and abandoned.is_set()  # finished work abandons nothing


def test_the_estimate_follows_the_latest_run():
    times = StepTimes()
    times.record("k", 1137.0)  # timed at start-up, on a busy machine
    assert times.estimate("k") == 1137.0
    times.record("k", 4.0)  # a later run's first step replaces it
    times.record("k", 5.0, new_run=False)
    times.record("k", 4.5, new_run=False)
    assert times.estimate("k") == 4.5
    times.record("other", 9.0)
    assert times.estimate("k") == 4.5 and times.estimate("missing") is None
    stale = StepTimes(max_age=0.0)
    stale.record("k", 1.0)
    time.sleep(0.01)
    assert stale.estimate("k") is None


def test_a_class_merging_together_times_one_step_not_one_each():
    """Thirty sessions asking at once for a figure nobody has: one times the step, the others go on without
    waiting (None), and later askers get its figure."""
    times, timings = StepTimes(), []
    started = threading.Barrier(30)

    def time_one() -> float:
        timings.append(1)
        time.sleep(0.3)  # the others arrive while this one times
        return 0.6

    def ask() -> tuple[float | None, float]:
        started.wait()
        begun = time.perf_counter()
        return times.estimate_or_time("k", time_one), time.perf_counter() - begun

    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(lambda _: ask(), range(30)))
    figures = [figure for figure, _ in answers]
    assert len(timings) == 1 and figures.count(0.6) >= 1 and set(figures) <= {0.6, None}
    assert sorted(seconds for figure, seconds in answers if figure is None)[-1] < 0.3  # nobody waited for it
    assert times.estimate_or_time("k", time_one) == 0.6 and len(timings) == 1

    def broken() -> float:
        raise RuntimeError("no step")

    with pytest.raises(RuntimeError):
        times.estimate_or_time("other", broken)
    assert times.estimate_or_time("other", lambda: 2.0) == 2.0  # a failed timing leaves no claim behind


def test_merging_again_reuses_the_latest_step_figure(adapted):
    key = jobs.step_key(adapted, "wemoe", 3)
    adapted.step_times.record(key, 123.0)
    message = handlers.merge(adapted, ["wemoe"], {}, per_task=3)
    assert "Estimated time" in message and jobs.step_estimate(adapted, "wemoe", 3) == 123.0


def test_a_client_side_cancel_stops_the_merge_and_replaces_nothing(config, monkeypatch):
    """gradio_client's ``job.cancel()`` (a script's timeout, a closed tab) on a running merge: it stops computing and
    the session keeps its adapted WEMoE."""
    import wemoe.methods.wudi as wudi

    steps = []
    real_check = wudi.check_stop
    monkeypatch.setattr(wudi, "check_stop", lambda: (steps.append(1), real_check())[1])
    with launched(config) as (_, client):
        client.predict(zoo="tiny", api_name="/load_zoo")
        client.predict(methods=["wemoe"], images_per_task=3, api_name="/merge")
        client.predict(target="wemoe", steps=2, lr=1e-2, images_per_task=3, api_name="/adapt")
        job = client.submit(methods=["wemoe", "wudi"], images_per_task=3, wudi__steps=5000, api_name="/merge")
        deadline = time.monotonic() + 60
        while not steps and time.monotonic() < deadline:  # WUDI is taking its steps
            time.sleep(0.05)
        job.cancel()
        while time.monotonic() < deadline:  # the session's merge job ends (a new merge is no longer refused)
            try:
                status, *_ = client.predict(methods=["task_arithmetic"], images_per_task=3, api_name="/merge")
                break
            except Exception as error:  # noqa: BLE001 - "One job at a time" while the cancelled merge runs
                assert "merging" in str(error)
                time.sleep(0.1)
        taken = len(steps)
        time.sleep(0.5)
        matrices = sum(1 for v in tiny_zoo(n_experts=3, seed=0, layers=3).base_state.values() if v.ndim == 2)
        assert len(steps) == taken < 5000 * matrices  # stopped: every matrix would take 5000 steps
        assert status.startswith("Merged")
        note = client.predict(target="wemoe", api_name="/cancel")
        assert note == "Nothing is running. The wemoe routers are as they were after step 2."
