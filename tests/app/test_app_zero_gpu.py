"""The app's adaptation, evaluation and routing under the ZeroGPU stand-in (tests/zero_gpu.py: each GPU function runs
in a forked child, in-place changes lost) give the same numbers as without it: routers bit for bit, equal tables."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest
import torch

from app import build_demo, gpu, handlers, jobs
from app.session import Session
from tests import zero_gpu
from tests.app_support import tiny_config, write_examples


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return write_examples(tmp_path_factory.mktemp("examples"))


@pytest.fixture(autouse=True)
def one_thread():
    """The stand-in's child computes on one thread (a fork keeps no OpenMP pool): so does the plain run compared with
    it, as sums over another number of threads may differ in the last bits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _session(examples) -> tuple[Session, object]:
    """A session on the tiny zoo with a wemoe merge, and its config (its own Shared: no cache across sessions)."""
    config = tiny_config(examples)
    session = Session()
    handlers.load_zoo(session, config, "tiny")
    handlers.merge(session, ["task_arithmetic", "wemoe"], {"task_arithmetic": {"lambda": 0.4}}, per_task=3)
    return session, config


def _event(demo, api_name: str):
    fns = demo.fns.values() if isinstance(demo.fns, dict) else demo.fns
    return next(f.fn for f in fns if f.api_name == api_name)


def _routers(session: Session) -> dict[str, torch.Tensor]:
    model = session.bench.merges["wemoe"].model
    return {k: v.clone() for k, v in model.state_dict().items() if ".router." in k}


def _adapted(examples, steps: int = 5) -> Session:
    session, _ = _session(examples)
    *_, (status, _) = handlers.adapt(session, "wemoe", steps, 5e-2, 3)
    assert status.startswith("Adapted wemoe")
    return session


def test_chunks_fit_the_call_limit():
    assert gpu.chunk_steps(1.0) == int((gpu.GPU_CALL_SECONDS - gpu.START_SECONDS) // gpu.STEP_MARGIN)
    assert gpu.chunk_steps(1000.0) == 1
    for per_step in (0.01, 0.3, 5.0):
        assert gpu.chunk_seconds(per_step, gpu.chunk_steps(per_step)) <= gpu.GPU_CALL_SECONDS


def test_adaptation_in_zero_gpu_chunks_equals_the_plain_run(examples, monkeypatch):
    plain = _adapted(examples)
    zero_gpu.install(monkeypatch)
    monkeypatch.setattr(jobs, "chunk_steps", lambda seconds: 2)  # 5 steps: chunks of 2, 2, 1
    chunked = _adapted(examples)
    assert len(zero_gpu.calls) == 3 and all(0 < c <= gpu.GPU_CALL_SECONDS for c in zero_gpu.calls)
    a, b = _routers(plain), _routers(chunked)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r.loss for r in s.bench.merges["wemoe"].history] for s in (plain, chunked)]
    assert losses[0] == losses[1] and chunked.bench.merges["wemoe"].adapt_steps == 5


def test_out_of_gpu_time_keeps_the_last_finished_chunk(examples, monkeypatch):
    plain = _adapted(examples, steps=2)
    zero_gpu.install(monkeypatch)
    monkeypatch.setattr(jobs, "chunk_steps", lambda seconds: 2)
    asked = iter([60.0, 0.001])  # the second call gets no time: ZeroGPU aborts it
    monkeypatch.setattr(gpu, "chunk_seconds", lambda *_: next(asked))
    session, _ = _session(examples)
    *_, (status, _) = handlers.adapt(session, "wemoe", 5, 5e-2, 3)
    assert status.startswith("**Out of GPU time after 2 of 5 steps**")
    assert "after step 2" in status and "Log in" in status and "fewer steps" in status
    result = session.bench.merges["wemoe"]
    assert result.adapt_steps == 2 and len(result.history) == 2
    a, b = _routers(plain), _routers(session)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same batches: the first 2 steps of any run are equal


def _evaluate_and_map(examples) -> tuple[Session, list, list]:
    session, config = _session(examples)
    list(handlers.adapt(session, "wemoe", 2, 5e-2, 3))
    demo = build_demo(config)  # on_gpu is applied here: after zero_gpu.install where it is installed
    evaluated = list(_event(demo, "evaluate")(session, True))
    mapped = list(_event(demo, "routing")(session, "pca"))
    return session, evaluated, mapped


def test_evaluation_and_routing_under_zero_gpu_equal_the_plain_ones(examples, monkeypatch):
    plain, plain_eval, plain_map = _evaluate_and_map(examples)
    zero_gpu.install(monkeypatch)
    session, evaluated, mapped = _evaluate_and_map(examples)
    assert len(zero_gpu.calls) == 1 + 2  # the 2 adaptation steps in one chunk, then evaluation and routing
    assert isinstance(session.table, pd.DataFrame)  # set in the main process from the worker's results
    pd.testing.assert_frame_equal(session.table, plain.table)
    assert len(evaluated) == len(plain_eval)
    (_, _, note, csv_path, json_path), (_, _, plain_note, *_) = evaluated[-1], plain_eval[-1]
    assert note == plain_note and csv_path.endswith(".csv") and json_path.endswith(".json")
    pd.testing.assert_frame_equal(pd.read_csv(csv_path), pd.read_csv(plain_eval[-1][3]))
    (heat, _, _, feature_map, note), = mapped[1:]  # after the "Routing..." status
    (plain_heat, _, _, plain_feature_map, plain_note), = plain_map[1:]
    assert note == plain_note
    # the figures came back through a pipe (pickled): compare them as they travel
    assert heat.to_json() == pickle.loads(pickle.dumps(plain_heat)).to_json()
    assert feature_map.to_json() == pickle.loads(pickle.dumps(plain_feature_map)).to_json()
