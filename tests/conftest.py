"""Fixtures shared by every test folder: a small corpus of four Shakespeare excerpts (real text, ~6 kB each), and a
data cache of the session's own (on-the-fly preparations never touch the user's ~/.cache/flashgau)."""

import os

import pytest

from flashgau.data.corpus import shakespeare_documents


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory):
    """FLASHGAU_CACHE for the whole session (subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("flashgau-cache")
    old = os.environ.get("FLASHGAU_CACHE")
    os.environ["FLASHGAU_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("FLASHGAU_CACHE", None)
    else:
        os.environ["FLASHGAU_CACHE"] = old


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """A folder of 4 documents (~6 kB each) cut from different plays."""
    folder = tmp_path_factory.mktemp("corpus")
    for doc in shakespeare_documents()[:4]:
        (folder / f"{doc.name}.txt").write_text(doc.text[2000:8000], encoding="utf-8")
    return folder
