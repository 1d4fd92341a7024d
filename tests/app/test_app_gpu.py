"""The optional ZeroGPU wrapper: identity without the `spaces` package, spaces.GPU with it, CPU adaptation on
ZeroGPU."""

import sys
import types

from app.gpu import adapt_device, on_gpu


def test_identity_without_spaces(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError

    def work(x):
        return x + 1

    assert on_gpu(30)(work) is work


def test_spaces_gpu_when_the_package_exists(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda duration: calls.append(duration) or (lambda fn: ("wrapped", fn))
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert on_gpu(90)(len) == ("wrapped", len) and calls == [90]


def test_on_zero_gpu_the_models_stay_on_the_cpu_and_the_steps_run_on_the_gpu(monkeypatch):
    from app.jobs import device_name

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert adapt_device() is None and device_name() in {"CPU", "GPU"}
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert adapt_device() == "cpu"  # the main process's models (and a step timed there)
    assert device_name() == "ZeroGPU Space"  # what the page says the steps run on (GPU chunks)
