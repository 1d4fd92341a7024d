"""Warm the default lesson at start-up: the page's defaults computed once, in the background, into the shared cache.

A class opening the page at once asks for the same default lesson (load the pocket zoo, merge task arithmetic +
WEMoE, adapt with the defaults, classify the gallery's examples, evaluate, map the routing; once that is ready, the
lesson's step 2 lambda sweep). Run through the handlers
on a session of its own, exactly as a student's clicks run, it fills the cache with the same keys; students who arrive
while it runs wait for the computation in flight instead of starting their own. It never delays the first page: it
starts in a daemon thread.

The examples are classified three times: before any merge (a student clicking the gallery while a merge is made),
with the merges as made (while their adaptation runs) and after the adaptation: a class clicking the gallery at once
then gets every example from the cache, where each first classification costs a forward pass of every model beside
everyone else's work.
"""

from __future__ import annotations

import logging
import threading
import time

from app import handlers, lesson_size
from app.analysis_tab import lambda_sweep_view
from app.inputs import AUTO_TASK, adapt_setting, list_examples, read_example
from app.session import AppConfig, Session

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
        shown.update("merging", 0.1)
        # the merges first (what "Merge" makes with the page's defaults, the same cache keys) and the gallery at
        # once: a class arriving with the app classifies it while its merges still time an adaptation step
        for method in methods:
            session.bench.merge(method)  # the method's defaults, as an untouched page sends
        classify_examples(session, config)
        sized = lesson_size.settings(config)  # the lesson's step 5 as the page runs it (sized for this machine)
        steps, per_task = sized.steps, sized.per_task
        handlers.merge(session, list(methods), {}, per_task, steps)
        for _ in handlers.adapt(session, "wemoe", steps, DEFAULT_LR, per_task, loss=config.default_loss,
                                update_every=0):
            done = session.bench.merges["wemoe"].adapt_steps
            shown.update(f"the routers adapting, step {done} of {steps}", 0.2 + 0.6 * done / max(1, steps))
        shown.update("classifying the examples and scoring every model", 0.85)
        classify_examples(session, config)
        for _ in handlers.evaluate(session):
            pass
        for _ in handlers.routing(session, "pca", config):
            pass
        shown.finish()
    except BaseException:
        shown.finish(failed=True)
        session.close()
        raise
    try:
        # then the lesson's step 2 sweep (keyed on the zoo alone): on ViT-B/32 it scores 22 towers, minutes a class
        # would otherwise wait for in step 2; after the lesson is ready, so it never delays it
        lambda_sweep_view(session, lesson_size.settings(config).sweep_step)
    finally:
        session.close()
    return time.perf_counter() - start


def classify_examples(session: Session, config: AppConfig) -> int:
    """Classify every example of the gallery of the session's zoo with its merges as they are now, as a click on it
    does ("auto" task); returns how many."""
    examples = list_examples(config, session.bench.task_names)
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
