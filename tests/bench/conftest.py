"""Fixtures of the benchmark smoke tests: argument namespaces (the corpus fixture is tests/conftest.py's)."""

import argparse

import pytest


@pytest.fixture
def parse():
    """parse(module, argv): the module's arguments parsed from argv (items may be numbers or paths)."""
    def _parse(module, argv):
        p = argparse.ArgumentParser()
        module.add_arguments(p)
        return p.parse_args([str(a) for a in argv])
    return _parse
