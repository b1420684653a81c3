"""Fixtures of the benchmark smoke tests: a small corpus (four Shakespeare excerpts) and argument namespaces."""

import argparse

import pytest

from flashgau.data.corpus import shakespeare_documents


@pytest.fixture(scope="session")
def bench_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_corpus")
    for doc in shakespeare_documents()[:4]:
        (folder / f"{doc.name}.txt").write_text(doc.text[2000:8000], encoding="utf-8")
    return folder


@pytest.fixture
def parse():
    """parse(module, argv): the module's arguments parsed from argv (items may be numbers or paths)."""
    def _parse(module, argv):
        p = argparse.ArgumentParser()
        module.add_arguments(p)
        return p.parse_args([str(a) for a in argv])
    return _parse
