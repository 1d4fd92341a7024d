"""A class's console shows events, not routine: quick results at debug level, no open_clip chatter (#27 item 12)."""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from wemoe.workbench.result_cache import NOTABLE_SECONDS, ResultCache


def test_routine_results_are_logged_at_debug_and_long_ones_at_info(caplog):
    cache = ResultCache(max_entries=4)
    with caplog.at_level(logging.DEBUG, logger="wemoe.workbench.result_cache"):
        cache.get_or_compute("classify", lambda: 1)
        cache.get_or_compute("merge", lambda: time.sleep(NOTABLE_SECONDS + 0.05) or 2)
    levels = {record.getMessage().split()[1]: record.levelno for record in caplog.records}
    assert levels == {"'classify'": logging.DEBUG, "'merge'": logging.INFO}


def test_a_model_made_to_be_loaded_does_not_say_it_was_initialized_randomly(caplog):
    from tests.helpers import tiny_clip

    with caplog.at_level(logging.INFO):
        tiny_clip()
    assert not [r for r in caplog.records if "initialized randomly" in r.getMessage()]


def test_the_app_logs_its_own_events_and_only_warnings_of_other_libraries(monkeypatch):
    spec = importlib.util.spec_from_file_location("app_main", Path(__file__).resolve().parents[2] / "app.py")
    app_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_main)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    for name in ("app", "wemoe"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    app_main.quiet_logs("INFO")
    assert root.level == logging.WARNING and not logging.getLogger("httpx").isEnabledFor(logging.INFO)
    assert logging.getLogger("app.events").isEnabledFor(logging.INFO)
    assert logging.getLogger("wemoe.workbench.result_cache").isEnabledFor(logging.INFO)
