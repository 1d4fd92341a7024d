"""The models panel's handlers (load a zoo: presets, a custom zoo, refusals that leave the session as it was), as
plain functions on a tiny random zoo."""

import gradio as gr
import pytest
import torch
from safetensors.torch import save_file

from app import handlers, inputs, messages, views
from app.session import AppConfig


def test_load_describes_the_zoo(session):
    summary = messages.zoo_summary(session.bench)
    assert "Experts: 3 (task0, task1, task2)" in summary and "| task1 | 3 | 12 |" in summary
    assert [value for _, value in views.task_choices(session)] == [inputs.AUTO_TASK, "task0", "task1", "task2"]
    assert "<details>" not in summary  # three rows: shown as they are


def test_a_long_task_table_is_folded_under_its_summary():
    """#33 item 4: twenty tasks' rows took a whole screen of the models panel; past FOLD_ROWS they fold."""
    from tests.helpers import tiny_task, tiny_zoo
    from wemoe.workbench.workbench import Workbench

    zoo = tiny_zoo(n_experts=9)
    summary = messages.zoo_summary(Workbench(zoo, [tiny_task(t, n_images=3, seed=i)
                                                   for i, t in enumerate(zoo.task_names)]))
    assert "Experts: 9 (task0" in summary and summary.endswith("</details>")
    folded = summary[summary.index("<details><summary>The 9 tasks: classes, test images, class names</summary>"):]
    assert "| task8 | 3 | 3 |" in folded and "| task0 |" in folded


def test_bad_zoo_choices_leave_the_session_as_it_was(session, config):
    bench = session.bench
    with pytest.raises(gr.Error, match="Unknown zoo 'nope'"):
        handlers.load_zoo(session, config, "nope")
    with pytest.raises(gr.Error, match="at least 1"):
        handlers.load_zoo(session, config, "tiny", samples=-3)
    with pytest.raises(gr.Error, match="at least one expert"):
        handlers.load_zoo(session, config, "custom", base_model="ViT-B-32")
    with pytest.raises(gr.Error, match="must look like 'task: source'"):
        handlers.load_zoo(session, config, "custom", base_model="ViT-B-32", experts_text="just-a-name")
    assert session.bench is bench


def test_unknown_hub_id_offline_is_a_clear_error(session, config):
    bench = session.bench
    with pytest.raises(gr.Error) as error:
        handlers.load_zoo(session, config, "custom", base_model="wemoe-tiny-test-app",
                          experts_text="mnist: nobody/no-such-model")
    assert "nobody/no-such-model" in str(error.value) or "wemoe-tiny-test-app" in str(error.value)
    assert session.bench is bench


def test_mismatched_checkpoint_is_refused(session, config, tmp_path):
    from tests.helpers import TINY_CONFIG, TINY_MODEL, tiny_clip

    tiny_clip()  # registers the tiny architecture with open_clip
    wrong = tmp_path / "task0.safetensors"
    save_file({"conv1.weight": torch.zeros(8, 3, 4, 4)}, str(wrong))
    bench = session.bench
    with pytest.raises(gr.Error, match="does not match the base"):
        handlers.load_zoo(session, config, "custom", base_model=TINY_MODEL, expert_files=[str(wrong)])
    assert session.bench is bench and TINY_CONFIG


def test_the_paper_preset_offline_says_how_to_get_it(session, config):
    bench = session.bench
    with pytest.raises(gr.Error, match="Loading the vit-b-32-8tasks zoo:.*(hub|download|offline|network)"):
        handlers.load_zoo(session, AppConfig(), "vit-b-32-8tasks")  # conftest sets HF_HUB_OFFLINE=1
    assert session.bench is bench
