"""The try panel computes only the models its compact table shows; ticking 'Every model' fills in the rest, the same
numbers as a full classification."""

import pytest

from app import handlers, inputs, views


@pytest.mark.parametrize(("task", "shown"), [("task1", ["wemoe", "expert task1"]),
                                             (inputs.AUTO_TASK, ["wemoe", "pretrained"])])
def test_every_model_on_demand_equals_a_full_classification(merged, config, task, shown):
    image = inputs.read_example("task2/example0.png", config)
    _, compact, _, _ = handlers.predict(merged, image, task, config)
    assert list(compact.columns) == shown
    assert list(merged.predictions.columns) == ["rank", *shown]  # nothing else was computed
    bench = merged.bench
    (result,) = bench.classify([image], inputs.chosen_task(bench, task), k=5,
                               centroid_per_task=config.centroid_per_task)
    full = views.prediction_table(result, bench.task_names)
    every = handlers.prediction_view(merged, True)
    assert every.equals(full)  # every model, in the full table's order, the same cells
    assert compact.equals(full[shown])
    assert handlers.prediction_view(merged, False).equals(compact)
    handlers.prediction_view(merged, True)
    _, again, _, _ = handlers.predict(merged, image, task, config)  # the box ticked first: everything at once
    assert again.equals(full)
