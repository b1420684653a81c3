"""Fixtures shared by every test folder: a small corpus of four Shakespeare excerpts (real text, ~6 kB each)."""

import pytest

from flashgau.data.corpus import shakespeare_documents


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """A folder of 4 documents (~6 kB each) cut from different plays."""
    folder = tmp_path_factory.mktemp("corpus")
    for doc in shakespeare_documents()[:4]:
        (folder / f"{doc.name}.txt").write_text(doc.text[2000:8000], encoding="utf-8")
    return folder
