"""The `build` fixture of the task tests: the tiny models of tests/models (model_helpers), whose attention matters."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))

from model_helpers import build_model  # noqa: E402


@pytest.fixture
def build():
    return build_model()
