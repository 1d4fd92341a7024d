"""The warm-up of the default lesson is visible: its stage and the time left, measured from its progress (#29)."""

from __future__ import annotations

from app.shared import WarmProgress
from app.warm import warm_default_lesson
from tests.app_support import tiny_config, write_examples


def test_the_time_left_follows_the_progress_so_far():
    warm = WarmProgress()
    assert warm.text() == ""  # nothing runs: pages say nothing
    warm.update("loading the zoo", 0.0)
    warm.started -= 10
    assert "measuring how long it takes" in warm.text()
    warm.update("the routers adapting, step 50 of 100", 0.5)
    assert "step 50 of 100" in warm.text() and "about 10 s left" in warm.text(now=warm.started + 10)
    warm.finish()
    assert warm.text() == ""


def test_the_warm_up_reports_its_stages_and_ends(tmp_path):
    config = tiny_config(write_examples(tmp_path))
    seen = []
    real = config.shared.warm.update
    config.shared.warm.update = lambda stage, fraction: (seen.append((stage, fraction)), real(stage, fraction))
    warm_default_lesson(config)
    stages = [stage for stage, _ in seen]
    assert stages[0] == "loading the zoo" and any("step 3 of 3" in s for s in stages)
    assert [f for _, f in seen] == sorted(f for _, f in seen)  # it only moves forward
    assert config.shared.warm.finished and not config.shared.warm.failed and config.shared.warm.text() == ""
