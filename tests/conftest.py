"""Test settings: offline hub, no analytics, slow tests only with --runslow or in CI."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WEMOE_KERNEL_POLICY", "builtin")  # the same paths on every machine, calibrated or not
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning threads slow a shared CPU ~5x

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (always on when CI=true)")


def _run_slow(config) -> bool:
    return config.getoption("--runslow") or os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config, items):
    if _run_slow(config):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (CI=true runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes heads and other caches under a temporary folder, never the user's home."""
    monkeypatch.setenv("WEMOE_CACHE", str(tmp_path_factory.getbasetemp() / "wemoe-cache"))


@pytest.fixture
def tiny_cli_zoo(monkeypatch):
    """``load_zoo`` (as the CLI calls it) gives a tiny 2-expert zoo whose tasks are registered."""
    import wemoe.loading
    from tests.helpers import tiny_task, tiny_zoo
    from wemoe.tasks.registry import register_task

    zoo = tiny_zoo(n_experts=2, seed=11)
    for i, name in enumerate(zoo.task_names):
        register_task(tiny_task(name, n_classes=3, n_images=9, seed=i))
    monkeypatch.setattr(wemoe.loading, "load_zoo", lambda spec, progress=None: zoo)
    return zoo
