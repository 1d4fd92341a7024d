"""A class on one app process: one shared zoo, shared deterministic results, fair queues, closed sessions freed."""

from __future__ import annotations

import gc
import time
import weakref

import pytest
import torch
from gradio_client import Client

from app import handlers, messages
from app.layout import build_demo
from app.session import Session
from tests.app_support import tiny_config, write_examples


@pytest.fixture
def config(tmp_path):
    return tiny_config(write_examples(tmp_path / "examples"))


def _student(config) -> Session:
    session = Session()
    handlers.load_zoo(session, config, "tiny")
    return session


def _routers(session: Session) -> list[torch.Tensor]:
    return [p.detach().clone() for p in session.bench.merges["wemoe"].model.parameters() if p.requires_grad]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _lesson(session: Session, steps: int = 3) -> list[str]:
    handlers.merge(session, ["task_arithmetic", "wemoe"], {}, per_task=3)
    return [status for status, _ in handlers.adapt(session, "wemoe", steps, 1e-2, 3, loss="im")]


def test_every_session_shares_one_zoo_object(config):
    first, second = _student(config), _student(config)
    assert first.bench is not second.bench
    assert first.bench.zoo is second.bench.zoo and first.bench.loaded is second.bench.loaded
    assert "already loaded on this server" in (messages.zoo_summary(second.bench)
                                               + handlers.load_zoo(Session(), config, "tiny"))


def test_the_second_student_gets_the_first_ones_results_from_the_cache_bitwise(config):
    first, second = _student(config), _student(config)
    _lesson(first)
    statuses = _lesson(second)
    assert "from the server's cache" in statuses[-1]
    assert _same(_routers(first), _routers(second))
    assert second.bench.merges["wemoe"].model is not first.bench.merges["wemoe"].model
    updates = [list(handlers.evaluate(s)) for s in (first, second)]
    tables = [u[-1] for u in updates]
    assert tables[0][0].data.equals(tables[1][0].data)
    assert len(updates[1]) == 1  # every cell from the cache: one update, the whole table, not one per cell
    assert "came from the server's cache" in tables[1][2]


def test_two_sessions_adapting_copies_of_the_same_default_merge_stay_apart(config):
    first, second = _student(config), _student(config)
    for session in (first, second):
        handlers.merge(session, ["wemoe"], {}, per_task=3)
    untouched = _routers(second)
    list(handlers.adapt(first, "wemoe", 3, 1e-2, 3))
    assert _same(_routers(second), untouched) and not _same(_routers(first), untouched)
    list(handlers.adapt(second, "wemoe", 3, 5e-2, 3))
    assert not _same(_routers(first), _routers(second))


def test_a_student_who_changes_a_setting_gets_their_own_computation(config):
    first, second, third = _student(config), _student(config), _student(config)
    _lesson(first)
    status = handlers.merge(second, ["task_arithmetic", "wemoe"], {"wemoe": {"lambda": 0.5}}, per_task=3)
    assert status.count("from the server's cache") == 1  # task arithmetic as before, WEMoE at lambda 0.5 made anew
    assert second.bench.merges["wemoe"].params["lambda"] == 0.5
    assert "from the server's cache" not in _lesson_adapt(second, steps=3)
    handlers.merge(third, ["task_arithmetic", "wemoe"], {}, per_task=3)
    assert "from the server's cache" not in _lesson_adapt(third, steps=5)  # more steps: a run of its own
    assert not _same(_routers(first), _routers(second)) and not _same(_routers(first), _routers(third))
    assert third.bench.merges["wemoe"].adapt_steps == 5 and first.bench.merges["wemoe"].adapt_steps == 3


def _lesson_adapt(session: Session, steps: int) -> str:
    return [status for status, _ in handlers.adapt(session, "wemoe", steps, 1e-2, 3, loss="im")][-1]


def test_a_session_runs_one_long_job_at_a_time(config):
    student = _student(config)
    handlers.merge(student, ["wemoe"], {}, per_task=3)
    running = handlers.adapt(student, "wemoe", 50, 1e-2, 3)
    next(running)
    with pytest.raises(Exception, match="already adapting"):
        next(handlers.evaluate(student))
    running.close()
    assert list(handlers.evaluate(student))  # the slot is free again


def test_a_closed_tab_frees_its_session(config):
    student = _student(config)
    student.session_hash = "tab-1"
    _lesson(student)
    bench = weakref.ref(student.bench)
    model = weakref.ref(student.bench.merges["wemoe"].model)
    assert config.shared.close("tab-1") == 1
    gc.collect()
    assert student.bench is None and bench() is None and model() is None


def test_idle_merges_are_dropped_with_a_message_and_busy_sessions_are_kept(config):
    idle, busy = _student(config), _student(config)
    for session in (idle, busy):
        handlers.merge(session, ["wemoe"], {}, per_task=3)
    busy.claim_long("adapting")
    assert config.shared.sweep(idle_seconds=60, now=time.monotonic() + 3600) == 1
    assert idle.bench.merges == {} and "wemoe" in busy.bench.merges
    with pytest.raises(Exception, match="Merge with WEMoE first"):
        next(handlers.adapt(idle, "wemoe", 3, 1e-2, 3))


def test_heavy_work_is_refused_with_a_message_above_the_memory_budget(config):
    student = _student(config)
    handlers.merge(student, ["wemoe"], {}, per_task=3)
    config.shared.memory_budget_mb = 1.0
    try:
        with pytest.raises(Exception, match="Try again in a minute"):
            next(handlers.adapt(student, "wemoe", 3, 1e-2, 3))
        assert "wemoe" in student.bench.merges  # nothing the student had is lost
    finally:
        config.shared.memory_budget_mb = 8192


def test_a_classification_is_not_queued_behind_long_jobs(config):
    demo = build_demo(config)
    demo.queue()
    demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        others = [Client(demo.local_url, verbose=False) for _ in range(3)]
        for client in others:
            client.predict(zoo="tiny", api_name="/load_zoo")
            client.predict(methods=["wemoe"], images_per_task=3, api_name="/merge")
        jobs = [c.submit(target="wemoe", steps=5000, lr=1e-3, images_per_task=3, api_name="/adapt") for c in others]
        deadline = time.monotonic() + 120
        while sum(bool(j.outputs()) for j in jobs) < 2 and time.monotonic() < deadline:  # both long slots are busy
            time.sleep(0.05)
        student = Client(demo.local_url, verbose=False)
        student.predict(zoo="tiny", api_name="/load_zoo")
        result = student.predict(example="task0/example0.png", api_name="/classify_example")
        assert result[1] is not None
        assert not any(job.done() for job in jobs)  # the classification came back while all long jobs still ran
        for client, job in zip(others, jobs, strict=True):
            client.predict(api_name="/cancel")
            job.cancel()
    finally:
        demo.close()


def test_the_warmed_default_lesson_is_what_a_student_then_gets_from_the_cache(config):
    from app.warm import DEFAULT_LR, DEFAULT_PER_TASK, warm_default_lesson

    warm_default_lesson(config)
    student = _student(config)
    status = handlers.merge(student, ["task_arithmetic", "wemoe"], {}, DEFAULT_PER_TASK, config.default_steps)
    assert status.count("from the server's cache") == 2
    statuses = [s for s, _ in handlers.adapt(student, "wemoe", config.default_steps, DEFAULT_LR, DEFAULT_PER_TASK,
                                             loss=config.default_loss)]
    assert "from the server's cache" in statuses[-1]
    note = list(handlers.evaluate(student))[-1][2]
    assert "came from the server's cache: experts, pretrained, task_arithmetic, wemoe" in note
    from app.inputs import AUTO_TASK, list_examples, read_example

    examples = list_examples(config, student.bench.task_names)
    assert examples
    misses = config.shared.results.misses
    for _, name in examples:  # the gallery was classified by the warm-up with these very merges
        handlers.predict(student, read_example(name, config), AUTO_TASK, config)
    assert config.shared.results.misses == misses
    from app.analysis_tab import lambda_sweep_view

    lambda_sweep_view(student)  # the lab's sweep (the pocket lesson's grid): made by the warm-up's step 2
    assert config.shared.results.misses == misses


def test_every_step_of_the_lesson_is_warmed(config):
    """A student clicking the lesson's steps after the warm-up computes nothing: steps 1-4, step 5's merge,
    adaptation, scores and routing, and step 7 all come from the shared cache."""
    from app import lesson
    from app.warm import warm_default_lesson

    warm_default_lesson(config)
    student = _student(config)
    misses = config.shared.results.misses
    lesson.meet(student, config)
    lesson.add_up(student, config)
    lesson.interfere(student, config)
    lesson.forget(student, config)
    statuses = [status for status, *_ in lesson.route(student, config)]
    assert "WEMoE:" in statuses[-1]
    lesson.cost(student, config)
    assert config.shared.results.misses == misses


def test_a_student_waiting_for_anothers_same_adaptation_can_classify_meanwhile(config):
    from PIL import Image

    first, second = _student(config), _student(config)
    for session in (first, second):
        handlers.merge(session, ["wemoe"], {}, per_task=3)
    running = handlers.adapt(first, "wemoe", 20, 1e-2, 3, update_every=0.0)
    while "step 1/20" not in next(running)[0]:  # the first student computes the run (paused after its first step)
        pass
    waiting = handlers.adapt(second, "wemoe", 20, 1e-2, 3, update_every=0.0)
    status = next(waiting)[0]
    if status.startswith("Adapting wemoe: 20 steps, about"):  # the estimate from the step time measured at merging
        status = next(waiting)[0]
    assert status.startswith("Another session is computing this same adaptation (wemoe, 20 steps")
    # the waiting student's session is not locked: a classification answers now (busy() would raise after 120 s)
    shown = handlers.predict(second, Image.new("RGB", (8, 8), (200, 30, 30)), None, config)
    assert shown[1] is not None
    list(running)
    assert "from the server's cache" in list(waiting)[-1][0]
    assert _same(_routers(first), _routers(second))


def test_a_long_jobs_next_step_waits_for_a_running_classification():
    import threading

    from app.shared import LightFirst

    gate, order = LightFirst(), []
    stepped = threading.Event()

    def long_job():
        gate.wait(timeout=60)
        order.append("step")
        stepped.set()

    with gate.light():
        assert gate.running() == 1
        worker = threading.Thread(target=long_job)
        worker.start()
        assert not stepped.wait(0.3)  # held while the light call runs
        order.append("classified")
    worker.join(timeout=60)
    assert order == ["classified", "step"] and gate.running() == 0
    assert gate.wait(timeout=60) < 1.0  # no light call: no wait


def test_a_long_jobs_next_step_waits_for_a_quiet_gap_after_the_last_classification():
    import time

    from app.shared import LightFirst

    gate = LightFirst(quiet=0.4)
    assert gate.wait(timeout=5) < 0.2  # no click yet: no wait
    with gate.light():
        pass
    ended = time.monotonic()
    gate.wait(timeout=5)
    assert time.monotonic() - ended >= 0.4  # the answer of the click just handled is still being sent
    with gate.light():
        pass
    assert gate.wait(timeout=0.1) < 0.3  # a stream of clicks never holds a step longer than the timeout


def test_adaptation_steps_yield_to_a_classification_in_the_same_process(config):
    first, second = _student(config), _student(config)
    handlers.merge(first, ["wemoe"], {}, per_task=3)
    running = handlers.adapt(first, "wemoe", 30, 1e-2, 3, update_every=0.0)
    while "step 1/30" not in next(running)[0]:
        pass
    steps = first.bench.merges["wemoe"].adapt_steps
    with first.shared.light_first.light():  # a classification of another student is running
        import threading

        advanced = threading.Event()
        worker = threading.Thread(target=lambda: (next(running), advanced.set()))
        worker.start()
        assert not advanced.wait(0.2) and first.bench.merges["wemoe"].adapt_steps == steps
    worker.join(timeout=60)
    assert first.bench.merges["wemoe"].adapt_steps == steps + 1
    running.close()
    assert second.shared is first.shared


def test_a_classification_waiting_for_its_own_sessions_lock_holds_no_long_job(config):
    import threading

    from PIL import Image

    student = _student(config)
    handlers.merge(student, ["wemoe"], {}, per_task=3)
    done = threading.Event()
    with student.lock:  # the session's own step is running
        worker = threading.Thread(target=lambda: (handlers.predict(student, Image.new("RGB", (8, 8)), None, config),
                                                  done.set()))
        worker.start()
        assert not done.wait(0.3)
        assert student.shared.light_first.running() == 0  # waiting for its session, it holds back nobody else
    worker.join(timeout=60)
    assert done.is_set()


def test_classifications_of_new_images_on_a_shared_zoo_take_turns(config, monkeypatch):
    import threading

    from PIL import Image

    import wemoe.workbench.workbench as workbench

    students = [_student(config), _student(config)]
    for student in students:
        handlers.merge(student, ["task_arithmetic"], {}, per_task=3)
    assert students[0].bench.loaded is students[1].bench.loaded
    real, inside, most, lock = workbench.classify_batch, [0], [0], threading.Lock()

    def counted(*args, **kwargs):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.3)  # long enough that two computations at once would overlap
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(workbench, "classify_batch", counted)
    start = threading.Barrier(2)

    def classify(i: int) -> None:
        start.wait(timeout=60)
        handlers.predict(students[i], Image.new("RGB", (8, 8), (40 + 100 * i, 10, 10)), "task0", config)

    workers = [threading.Thread(target=classify, args=(i,)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert config.shared.results.misses >= 2 and most[0] == 1  # two new images, computed one after the other


def test_the_warm_up_classifies_the_gallery_before_the_merges_time_a_step(config, monkeypatch):
    import app.warm as warm
    from app.inputs import AUTO_TASK, list_examples, read_example

    seen = {}
    real_merge = warm.handlers.merge

    def merge(session, *args, **kwargs):
        if "misses" not in seen:  # the warm-up's first 'Merge': is every example classified already?
            misses = config.shared.results.misses
            for _, name in list_examples(config, session.bench.task_names):
                handlers.predict(session, read_example(name, config), AUTO_TASK, config)
            seen["misses"] = config.shared.results.misses - misses
        return real_merge(session, *args, **kwargs)

    monkeypatch.setattr(warm.handlers, "merge", merge)
    warm.warm_default_lesson(config)
    assert seen == {"misses": 0}


def test_the_classify_turn_shortens_the_gil_switch_interval_only_while_held(monkeypatch):
    import sys

    from app.shared import ClassifyTurn, Shared, switch_interval

    monkeypatch.delenv("MERGE_EXPLORER_SWITCH_INTERVAL", raising=False)
    assert switch_interval() == 0.0002
    monkeypatch.setenv("MERGE_EXPLORER_SWITCH_INTERVAL", "0")
    with pytest.raises(ValueError, match="MERGE_EXPLORER_SWITCH_INTERVAL must be in"):
        Shared()
    monkeypatch.setenv("MERGE_EXPLORER_SWITCH_INTERVAL", "0.001")
    before = sys.getswitchinterval()
    turn = ClassifyTurn()
    with turn:
        assert sys.getswitchinterval() == pytest.approx(0.001)
        assert not turn._lock.acquire(blocking=False)  # held: the next classification waits
    assert sys.getswitchinterval() == before and turn._lock.acquire(blocking=False)


def test_every_shared_zoo_classifies_in_the_process_wide_turn(config):
    student = _student(config)
    assert student.bench.loaded.classify_turn is config.shared.classify_turn


def test_an_adaptation_step_computes_in_a_compute_slot_and_waiting_takes_none(config):
    import threading

    from app.jobs import locked_steps
    from wemoe.workbench.cached_runs import Waiting

    student = _student(config)
    slots, seen = student.shared.compute_slots, []
    held = threading.BoundedSemaphore(1)
    student.shared.compute_slots = held

    def items():
        for item in ("step", Waiting("step 3/10"), Waiting("step 4/10"), "restored"):
            seen.append(not held.acquire(blocking=False))  # the slot taken (by locked_steps) while this item is made
            if not seen[-1]:
                held.release()
            yield item

    try:
        assert list(locked_steps(student, items(), compute_slot=True))[0] == "step"
        # made in the slot: the first item and the one after a step; after a Waiting item (waiting computes
        # nothing) the next is made without one
        assert seen == [True, True, False, False]
        seen.clear()
        list(locked_steps(student, items()))  # evaluation: no slot
        assert seen == [False, False, False, False]
    finally:
        student.shared.compute_slots = slots


def test_a_classification_waiting_for_its_session_goes_before_the_sessions_next_step(config):
    """A long job's steps each take the session's lock; a click of the same session that waits for it gets it at the
    next step's end (threading.Lock is not fair: the job retook it at once, a click waited 1.9 s in a class)."""
    import threading

    from app.jobs import busy, locked_steps

    student = _student(config)
    taken, asked, got = [], threading.Event(), []

    def steps():
        for step in range(40):
            taken.append(step)
            if step == 2:
                asked.set()  # the click arrives while this step holds the lock
            threading.Event().wait(0.02)  # a step's work, under the session's lock
            yield step

    def click() -> None:
        asked.wait()
        with student.light_first.light(), busy(student):
            got.append(len(taken))

    clicker = threading.Thread(target=click)
    clicker.start()
    assert list(locked_steps(student, steps())) == list(range(40))
    clicker.join(timeout=10)
    assert got and got[0] <= 3, f"the click got the lock only after {got} of 40 steps"


def test_the_memory_budget_counts_what_is_in_use_not_what_the_allocator_kept(monkeypatch):
    """After a transient peak glibc keeps the freed memory (RSS stays high): the budget check hands it back first
    and measures again, so a class is not refused for memory nobody uses; memory in use is still refused."""
    import app.shared as shared_module
    from app.shared import MemoryBudgetExceeded, Shared, rss_mb, trim_free_memory

    if not trim_free_memory():
        pytest.skip("no glibc malloc_trim here")
    import torch

    before = rss_mb()
    torch.ones(16 << 20, dtype=torch.uint8)  # mmapped and freed: glibc's mmap threshold rises to 16 MB
    pieces = [torch.ones(4 << 20, dtype=torch.uint8) for _ in range(100)]  # now on the heap
    top = torch.ones(4 << 20, dtype=torch.uint8)  # kept above them: the heap's top cannot shrink past it
    del pieces
    assert rss_mb() - before > 300  # the 400 MB freed are still resident
    shared = Shared(memory_budget_mb=before + 200, cache_dir=None)
    shared.check_memory()  # over the budget before the trim, within it after
    assert rss_mb() < before + 200
    del top
    kept = torch.ones(400 << 20, dtype=torch.uint8)  # in use: refused whatever the allocator gives back
    with pytest.raises(MemoryBudgetExceeded, match="above its"):
        shared.check_memory()
    del kept
    assert shared_module.trim_free_memory is trim_free_memory


def test_a_long_job_gives_its_freed_memory_back_when_it_ends(config, monkeypatch):
    """An adaptation's activations and scratch are freed when it ends; the allocator is asked to return them (the
    RSS is what a Space's memory limit counts), once the job is over, not during it."""
    import app.jobs as jobs

    trimmed = []
    monkeypatch.setattr(jobs, "trim_free_memory", lambda: trimmed.append(True) or True)
    student = _student(config)
    handlers.merge(student, ["wemoe"], {}, per_task=3)
    updates = handlers.adapt(student, "wemoe", 2, 1e-2, 3)
    next(updates)
    assert trimmed == []  # running
    for _ in updates:
        pass
    assert trimmed == [True]


def test_the_app_limits_glibcs_malloc_arenas():
    from app.shared import limit_malloc_arenas, trim_free_memory

    if not trim_free_memory():
        pytest.skip("no glibc here")
    assert limit_malloc_arenas(2)  # accepted by mallopt (M_ARENA_MAX)
