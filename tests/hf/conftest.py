"""The `build` fixture of the Hugging Face tests (tiny models whose attention matters, from tests/models). Each
module that needs transformers starts with pytest.importorskip, so without the `hf` extra they skip with a message."""

import pytest

from hf_helpers import build_model

# marks that transformers' common test files (test_transformers_common.py) put on their tests, registered as their
# own conftest registers them, so that pytest does not warn of unknown marks
TRANSFORMERS_MARKS = ("accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test",
                      "torch_compile_test")


def pytest_configure(config):
    for name in TRANSFORMERS_MARKS:
        config.addinivalue_line("markers", f"{name}: a mark of transformers' own common tests")


@pytest.fixture
def build():
    return build_model()
