"""`flashgau bench perf-fastpath` at a tiny size: whole steps with all fast paths off and on, and with --each one row
per fast path (one FLASH block with every fast path on but that one), the switches restored afterwards."""

import json

from flashgau.bench import cli as bench_cli
from flashgau.ops import fastpath


def test_perf_fastpath_times_every_fast_path_alone(tmp_path):
    out = tmp_path / "pf"
    assert bench_cli.main(["perf-fastpath", "--preset", "tiny", "--contexts", "128", "--repeats", "1", "--warmup", "0",
                           "--each", "--each-rounds", "2", "--out", str(out)]) == 0
    records = json.loads(out.with_suffix(".json").read_text())["records"]
    modes = {(r["arch"], r["mode"]) for r in records}
    assert modes == {("flash", "plain"), ("flash", "fast"), ("transformer++", "plain"), ("transformer++", "fast"),
                     ("flash", "blockfast"), ("flash", "blockplain"),
                     *(("flash", f"block-{name}") for name in fastpath.FAST_PATHS)}
    assert all(len(r["times_s"]) == (2 if r["mode"].startswith("block") else 1) and r["median_s"] > 0
               for r in records)
    md = out.with_suffix(".md").read_text()
    for name in (*fastpath.FAST_PATHS, "all (plain)"):
        assert f"| 128 | {name} | " in md
    assert all(fastpath.enabled(name) for name in fastpath.FAST_PATHS)
