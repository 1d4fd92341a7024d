"""Fixtures of the app's handler tests: a config with the tiny random zoo and example images, a session that loaded
it, and that session with task arithmetic (lambda 0.4) and an unadapted WEMoE merged. A test file that defines a
fixture of the same name uses its own."""

import pytest

from app import handlers
from app.session import Session
from tests.app_support import tiny_config, write_examples


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    return tiny_config(write_examples(tmp_path_factory.mktemp("examples")))


@pytest.fixture
def session(config):
    session = Session()
    handlers.load_zoo(session, config, "tiny")
    yield session
    session.close()


@pytest.fixture
def merged(session):
    handlers.merge(session, ["task_arithmetic", "wemoe"], {"task_arithmetic": {"lambda": 0.4}}, per_task=3)
    return session
