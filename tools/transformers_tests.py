"""Unpack the test files of the installed transformers' source distribution into .cache/transformers-tests, where
tests/hf/test_transformers_common.py runs transformers' own common model tests on flashgau's models.

    .venv/bin/python tools/transformers_tests.py          # once; again after upgrading transformers

The archive comes from the package registry's simple index (PIP_INDEX_URL, else pypi.org), is checked against the
SHA-256 the index gives, and only its tests/ and src/ folders are kept (some testers read transformers' source
beside its tests), with the empty tests/__init__.py a checkout has. Nothing is built or installed. Exit status 0 when the files are there (already or now), 1 with
one line on stderr when they could not be fetched (no network: the test module then skips and says so).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import sys
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

DEST = Path(__file__).resolve().parents[1] / ".cache" / "transformers-tests"


def archive_url(version: str, index: str) -> tuple[str, str]:
    """(url, sha256) of transformers-VERSION.tar.gz in the simple index at `index`."""
    page = f"{index.rstrip('/')}/transformers/"
    html = urllib.request.urlopen(page, timeout=60).read().decode()
    name = re.escape(f"transformers-{version}.tar.gz")
    found = re.search(rf'href="([^"]*{name})#sha256=([0-9a-f]{{64}})"', html)
    if not found:
        raise LookupError(f"{page} lists no transformers-{version}.tar.gz")
    return urllib.parse.urljoin(page, found.group(1)), found.group(2)


def unpack(data: bytes, version: str, dest: Path) -> None:
    """The archive's tests/ and src/ into dest (replacing what was there), then dest/VERSION."""
    top = f"transformers-{version}/"
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith((top + "tests/", top + "src/"))
                   and (m.isfile() or m.isdir())]
        for m in members:
            m.name = m.name[len(top):]
        tar.extractall(staging, members=members, filter="data")
    # a checkout's tests/ is a package; the archive leaves out its empty __init__.py, which the testers import
    (staging / "tests" / "__init__.py").touch()
    (staging / "VERSION").write_text(version + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def main() -> int:
    try:
        import transformers
    except ImportError:
        print("transformers is not installed: pip install 'flashgau[hf]'", file=sys.stderr)
        return 1
    version = transformers.__version__
    marker = DEST / "VERSION"
    have = DEST / "tests" / "test_modeling_common.py"
    if marker.is_file() and marker.read_text().strip() == version and have.is_file():
        print(f"transformers {version}'s test files are already in {DEST}")
        return 0
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")
    try:
        url, sha256 = archive_url(version, index)
        data = urllib.request.urlopen(url, timeout=300).read()
    except (OSError, LookupError) as err:
        print(f"could not fetch transformers {version}'s source distribution from {index}: {err}", file=sys.stderr)
        return 1
    if hashlib.sha256(data).hexdigest() != sha256:
        print(f"transformers-{version}.tar.gz from {url} does not match the index's SHA-256", file=sys.stderr)
        return 1
    unpack(data, version, DEST)
    print(f"unpacked transformers {version}'s tests/ and src/ into {DEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
