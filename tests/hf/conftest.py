"""The `build` fixture of the Hugging Face tests (tiny models whose attention matters, from tests/models). Each
module that needs transformers starts with pytest.importorskip, so without the `hf` extra they skip with a message."""

import pytest

from hf_helpers import build_model


@pytest.fixture
def build():
    return build_model()
