"""The `build` fixture: tiny models whose attention matters (see model_helpers.py)."""

import pytest

from model_helpers import build_model


@pytest.fixture
def build():
    return build_model()
