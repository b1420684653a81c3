"""Fixtures of the benchmark smoke tests: argument namespaces and the scripts of benchmarks/ (the corpus fixture is
tests/conftest.py's)."""

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def benchmark_script():
    """benchmark_script(name): the module benchmarks/<name>.py, loaded from its file (the scripts are no package)."""
    def load(name):
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture
def parse():
    """parse(module, argv): the module's arguments parsed from argv (items may be numbers or paths)."""
    def _parse(module, argv):
        p = argparse.ArgumentParser()
        module.add_arguments(p)
        return p.parse_args([str(a) for a in argv])
    return _parse
