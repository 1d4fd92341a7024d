"""The result cache's disk layer: results written as safetensors and JSON come back equal bit for bit; a damaged,
truncated or foreign file is ignored with one log line; a directory that cannot be written leaves everything in
memory; the size is bounded; two processes writing the same key never corrupt it."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import wemoe.workbench.result_store as result_store
from wemoe.adaptation.adapt import AdaptStep
from wemoe.evaluation.evaluate import Score
from wemoe.workbench.cached_runs import AdaptedState
from wemoe.workbench.result_cache import ResultCache
from wemoe.workbench.result_codecs import TREE, NotEncodable
from wemoe.workbench.result_store import MISSING, ResultStore, stored_key

LOGGER = "wemoe.workbench.result_store"


def _state(seed: int = 0) -> AdaptedState:
    generator = torch.Generator().manual_seed(seed)
    return AdaptedState({"router.0.weight": torch.randn(4, 3, generator=generator),
                         "router.0.bias": torch.randn(3, generator=generator).to(torch.bfloat16)},
                        (AdaptStep(1, 0.6931471805599453, {"a": 0.1, "b": float("nan")}, 0.25),
                         AdaptStep(2, 0.5, {"a": 1e-300, "b": 2.0}, 0.5)))


def _same_state(a: AdaptedState, b: AdaptedState) -> bool:
    return (list(a.trainable) == list(b.trainable)
            and all(torch.equal(a.trainable[k], b.trainable[k]) and a.trainable[k].dtype == b.trainable[k].dtype
                    for k in a.trainable)
            and repr(a.records) == repr(b.records))  # repr: NaN equals NaN


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def test_the_tree_codec_gives_back_every_kind_of_result_bit_for_bit():
    frame = pd.DataFrame({"task0": [10.5, 1 / 3], "average": [0.1 + 0.2, 99.0]},
                         index=pd.Index(["pretrained", "experts"], name="model"))
    frame.columns.name = "task"
    frame.attrs = {"normalized": True}
    sweep = pd.DataFrame({"a": [1.0, 2.0]}, index=pd.Index([0.1, 0.35], name="lambda"))
    value = {
        "scores": (Score("m", "t", 33.33333333333333, 9, cached=False), Score("m", "u", 0.0, 9)),
        "state": _state(),
        "frame": frame, "sweep": sweep, "series": pd.Series([0.25, 0.5], index=["x", "y"], name="conflicts"),
        "points": np.arange(6, dtype=np.float32).reshape(3, 2), "scalar": np.float64(0.1), 0.35: [1, (2, "x")],
        "none": None,
    }
    back = TREE.decode(TREE.encode(value))
    assert back.keys() == value.keys()
    assert back["scores"] == value["scores"] and type(back["scores"]) is tuple
    assert _same_state(back["state"], value["state"])
    for name in ("frame", "sweep"):
        pd.testing.assert_frame_equal(back[name], value[name], check_exact=True)
    assert back["frame"].attrs == {"normalized": True} and back["frame"].columns.name == "task"
    pd.testing.assert_series_equal(back["series"], value["series"], check_exact=True)
    assert back["points"].dtype == np.float32 and np.array_equal(back["points"], value["points"])
    assert type(back["scalar"]) is np.float64 and back["scalar"] == 0.1
    assert back[0.35] == [1, (2, "x")] and back["none"] is None


def test_what_no_codec_writes_is_refused_and_stays_in_memory(tmp_path):
    with pytest.raises(NotEncodable):
        TREE.encode({"a": object()})
    store = ResultStore(tmp_path)
    assert not store.save(("k",), {"a": object()})
    assert not store.save(("k", object()), 1.0)  # a key that is not plain data
    assert stored_key(("k", [1])) is None and stored_key(("k", (1, 2.5, None, True))) is not None
    cache = ResultCache(store=store)
    assert cache.get_or_compute(("k",), lambda: {"a": object}) [1] is False
    assert list(tmp_path.iterdir()) == []


def test_a_result_written_by_one_cache_is_read_by_a_fresh_one(tmp_path):
    first = ResultCache(store=ResultStore(tmp_path))
    first.get_or_compute(("z", "run"), _state)
    first.get_or_compute(("z", "scores"), lambda: (Score("m", "t", 12.5, 8),))
    assert sorted(p.suffix for p in tmp_path.iterdir() if not p.name.startswith(".")) == [".json", ".safetensors"]
    again = ResultCache(store=ResultStore(tmp_path))  # a restarted process
    state, hit = again.get_or_compute(("z", "run"), lambda: pytest.fail("computed again"))
    assert hit and _same_state(state, _state())
    assert again.get_or_compute(("z", "scores"), lambda: None) == ((Score("m", "t", 12.5, 8),), True)
    assert again.disk_hits == 2 and again.misses == 0


def test_a_new_formula_version_misses(tmp_path, monkeypatch):
    ResultStore(tmp_path).save(("z", "run"), _state())
    assert ResultStore(tmp_path).load(("z", "run")) is not MISSING
    monkeypatch.setattr(result_store, "FORMULAS_VERSION", result_store.FORMULAS_VERSION + 1)
    assert ResultStore(tmp_path).load(("z", "run")) is MISSING


@pytest.mark.parametrize("value", [_state(), (Score("m", "t", 12.5, 8),)], ids=["safetensors", "json"])
def test_a_truncated_file_is_ignored_with_one_log_line(tmp_path, caplog, value):
    ResultStore(tmp_path).save(("z", "x"), value)
    (path,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    store = ResultStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.load(("z", "x")) is MISSING
        assert store.load(("z", "x")) is MISSING  # said once
    assert len(_warnings(caplog)) == 1 and path.name in _warnings(caplog)[0]
    cache = ResultCache(store=store)  # computed again and written whole over it
    assert cache.get_or_compute(("z", "x"), lambda: value)[1] is False
    assert ResultStore(tmp_path).load(("z", "x")) is not MISSING


def test_a_damaged_tensor_byte_is_ignored(tmp_path, caplog):
    ResultStore(tmp_path).save(("z", "x"), _state())
    (path,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # a flipped bit in the last tensor's bytes: the file still parses
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert ResultStore(tmp_path).load(("z", "x")) is MISSING
    assert len(_warnings(caplog)) == 1 and "digest" in _warnings(caplog)[0]


def test_a_foreign_entry_under_a_key_s_name_is_ignored(tmp_path, caplog):
    store = ResultStore(tmp_path)
    store.save(("z", "a"), _state(1))
    source = store.entry_path(("z", "a")).with_suffix(".safetensors")
    target = store.entry_path(("z", "b")).with_suffix(".safetensors")
    target.write_bytes(source.read_bytes())  # a copied file, or a hash collision
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.load(("z", "b")) is MISSING
    assert len(_warnings(caplog)) == 1 and "foreign" in _warnings(caplog)[0]
    assert _same_state(store.load(("z", "a")), _state(1))


def test_a_directory_that_cannot_be_made_leaves_results_in_memory(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        cache = ResultCache(store=ResultStore(blocker / "cache"))
        for i in range(3):
            assert cache.get_or_compute(("z", i), _state)[1] is False
            assert cache.get_or_compute(("z", i), lambda: pytest.fail("computed again"))[1] is True
    assert len(_warnings(caplog)) == 1 and "memory only" in _warnings(caplog)[0]
    assert not cache.store.writable and cache.store.saved == 0


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC], ids=["read-only", "full"])
def test_a_read_only_or_full_directory_still_serves_what_it_holds_and_says_so_once(tmp_path, caplog, monkeypatch,
                                                                                      code):
    ResultStore(tmp_path).save(("z", "kept"), _state())
    real_replace = os.replace

    def failing_replace(source, target):
        if str(target).startswith(str(tmp_path)):
            raise OSError(code, os.strerror(code))
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    cache = ResultCache(store=ResultStore(tmp_path))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert _same_state(cache.get_or_compute(("z", "kept"), lambda: pytest.fail("computed"))[0], _state())
        for i in range(3):
            assert cache.get_or_compute(("z", i), _state)[1] is False
            assert cache.get_or_compute(("z", i), lambda: pytest.fail("computed again"))[1] is True
    assert len(_warnings(caplog)) == 1 and "memory only" in _warnings(caplog)[0]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    assert cache.store.writable is (code == errno.ENOSPC)  # full: tried again later (space may come back)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories (the test above fakes it)")
def test_a_read_only_directory_for_real(tmp_path, caplog):
    ResultStore(tmp_path).save(("z", "kept"), _state())
    tmp_path.chmod(0o555)
    try:
        cache = ResultCache(store=ResultStore(tmp_path))
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert cache.get_or_compute(("z", "kept"), lambda: pytest.fail("computed"))[1] is True
            assert cache.get_or_compute(("z", "new"), _state)[1] is False
        assert len(_warnings(caplog)) == 1
    finally:
        tmp_path.chmod(0o755)


def test_the_least_recently_used_entries_go_first_beyond_the_bound(tmp_path):
    store = ResultStore(tmp_path)
    big = {"x": torch.zeros(25_000)}  # about 100 kB each
    for i in range(3):
        store.save(("z", i), big)
        os.utime(store.entry_path(("z", i)).with_suffix(".safetensors"), (1000 + i, 1000 + i))
    assert store.load(("z", 0)) is not MISSING  # read: now the most recent
    store.max_bytes = 3.5 * store.size() / 3
    store.save(("z", 3), big)
    kept = [i for i in range(4) if store.entry_path(("z", i)).with_suffix(".safetensors").exists()]
    assert kept == [0, 2, 3] and store.size() <= store.max_bytes


def _write_and_read(directory: str, seed: int, rounds: int) -> tuple[int, int]:
    """In a child process: write the same key ``rounds`` times and read it between writes; (whole reads, damaged)."""
    logging.basicConfig(level=logging.WARNING)
    store = ResultStore(directory)
    value = {"w": torch.arange(200_000, dtype=torch.float32), "seed": 7}  # the same value from both processes
    whole = 0
    for _ in range(rounds):
        store.save(("shared", "key"), value)
        found = store.load(("shared", "key"))
        whole += found is not MISSING and torch.equal(found["w"], value["w"])
    return whole, len(store._said)


def test_two_processes_writing_the_same_key_never_corrupt_it(tmp_path):
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        results = pool.starmap(_write_and_read, [(str(tmp_path), i, 25) for i in range(2)])
    assert results == [(25, 0), (25, 0)]  # every read whole, nothing ignored
    names = [p.name for p in tmp_path.iterdir()]
    assert not [n for n in names if n.endswith(".tmp")]
    found = ResultStore(tmp_path).load(("shared", "key"))
    assert torch.equal(found["w"], torch.arange(200_000, dtype=torch.float32)) and found["seed"] == 7


def test_the_variable_turns_the_store_on(tmp_path, monkeypatch):
    monkeypatch.delenv(result_store.CACHE_DIR_ENV, raising=False)
    assert ResultStore.from_env() is None
    monkeypatch.setenv(result_store.CACHE_DIR_ENV, str(tmp_path / "made"))
    monkeypatch.setenv(result_store.CACHE_MB_ENV, "2")
    store = ResultStore.from_env()
    assert store.directory == Path(tmp_path / "made" / "results") and store.directory.is_dir()
    assert store.max_bytes == 2 * 2**20
