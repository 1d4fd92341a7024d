"""Warm the default lesson at start-up: the page's defaults computed once, in the background, into the shared cache.

A class opening the page at once asks for the same default lesson: the lesson tab's steps in their order (1 the
experts' table, 2 task arithmetic at the page's lambda and the lambda sweep, 3 the interference, 4 forgetting the
suggested task, 5 the WEMoE merge, its adaptation with the defaults, its scores and routing), the gallery's examples,
and the lab's defaults (the same merges, the evaluation, the routing maps). Run through the lesson's and the
handlers' functions on a session of its own, exactly as a student's clicks run, it fills the cache with the same keys;
students who arrive while it runs wait for the computation in flight instead of starting their own, step by step
behind it. It never delays the first page: it starts in a daemon thread.

The examples are classified three times: before any merge (a student clicking the gallery while a merge is made),
with the merges as made (while their adaptation runs) and after the adaptation: a class clicking the gallery at once
then gets every example from the cache, where each first classification costs a forward pass of every model beside
everyone else's work.
"""

from __future__ import annotations

import logging
import threading
import time

from app import handlers, lesson, lesson_size
from app.inputs import AUTO_TASK, adapt_setting, gallery_examples, read_example
from app.session import AppConfig, Session
from app.shared import WarmProgress

log = logging.getLogger(__name__)
DEFAULT_LR = adapt_setting("lr").default  # the page's learning-rate box: its declared default
DEFAULT_PER_TASK = adapt_setting("per_task").default  # the page's images-per-task slider: its declared default


def warm_default_lesson(config: AppConfig, methods: tuple[str, ...] = ("task_arithmetic", "wemoe")) -> float:
    """Run the page's default lesson once (results land in ``config.shared``); returns the seconds it took."""
    start = time.perf_counter()
    session = Session()
    shown = config.shared.warm
    try:
        shown.update("loading the zoo", 0.0)
        handlers.load_zoo(session, config, config.default_zoo)
        # the gallery as a student sees it before any merge (the lesson's step 6 is clicked while step 5 merges)
        shown.update("classifying the examples", 0.05)
        classify_examples(session, config)
        shown.update("merging", 0.06)
        # the merges first (what "Merge" makes with the page's defaults, the same cache keys: seconds) and the
        # gallery with them, before the lesson's steps 1-4: a class reaching step 5 clicks the gallery while its
        # merges time an adaptation step and adapt, and finds every example classified
        for method in methods:
            session.bench.merge(method)  # the method's defaults, as an untouched page sends
        classify_examples(session, config)
        warm_lesson_steps(session, config, shown)
        sized = lesson_size.settings(config)  # the lesson's step 5 as the page runs it (sized for this machine)
        steps, per_task = sized.steps, sized.per_task
        handlers.merge(session, list(methods), {}, per_task, steps)
        for _ in handlers.adapt(session, "wemoe", steps, DEFAULT_LR, per_task, loss=config.default_loss,
                                update_every=0):
            done = session.bench.merges["wemoe"].adapt_steps
            shown.update(f"the routers adapting, step {done} of {steps}", 0.2 + 0.6 * done / max(1, steps))
        shown.update("classifying the examples and scoring every model", 0.85)
        classify_examples(session, config)
        lesson.merged_scores(session, list(methods))  # step 5's closing line: both merges on the lesson's sample
        lesson.routing_by_task(session, config)
        for _ in handlers.evaluate(session):
            pass
        lesson.cost(session, config)  # step 7
        for _ in handlers.routing(session, "pca", config):
            pass
        shown.finish()
    except BaseException:
        shown.finish(failed=True)
        raise
    finally:
        session.close()
    return time.perf_counter() - start


def warm_lesson_steps(session: Session, config: AppConfig, shown: WarmProgress | None = None) -> None:
    """The lesson's steps 1-4 with the page's defaults, as a student clicks them (their results in the shared cache):
    the experts' table, task arithmetic at the page's lambda and the sweep, the interference, forgetting."""
    for stage, fraction, step in (("step 1: every expert on every task", 0.1, lambda: lesson.meet(session, config)),
                                  ("step 2: adding the experts up", 0.12, lambda: lesson.add_up(session, config)),
                                  ("step 3: the interference", 0.14, lambda: lesson.interfere(session, config)),
                                  ("step 4: forgetting a task", 0.16, lambda: lesson.forget(session, config))):
        if shown is not None:
            shown.update(stage, fraction)
        step()


def classify_examples(session: Session, config: AppConfig) -> int:
    """Classify every example of the gallery of the session's zoo with its merges as they are now, as a click on it
    does ("auto" task); returns how many."""
    examples = gallery_examples(config, session.bench.task_names)
    for _, name in examples:
        handlers.predict(session, read_example(name, config), AUTO_TASK, config)
    return len(examples)


def start_warming(config: AppConfig) -> threading.Thread:
    """:func:`warm_default_lesson` in a daemon thread; a failure is logged, never raised (the app works without)."""

    def run() -> None:
        try:
            log.info("default lesson warmed in %.1f s", warm_default_lesson(config))
        except Exception:  # noqa: BLE001 - warming is an optimisation: log and serve anyway
            log.exception("warming the default lesson failed; sessions compute it themselves")

    thread = threading.Thread(target=run, name="warm-default-lesson", daemon=True)
    thread.start()
    return thread
