"""`flashgau bench decode` on a tiny model: it writes the three report files with every field, and computes the
issue-4 targets from its own measurements."""

import json

from flashgau.bench import decode


def test_decode_bench_writes_reports(tmp_path):
    code = decode.main(["--archs", "flash", "transformer++", "--preset", "tiny", "--positions", "16", "40",
                        "--steps", "2", "--warmup", "1", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "decode.json").read_text())
    assert set(report["results"]) == {"flash", "transformer++"}
    for rows in report["results"].values():
        assert [r["position"] for r in rows] == [16, 40]
        for r in rows:
            assert r["latency_ms"] > 0 and r["state_bytes"] > 0 and r["latency_min_ms"] <= r["latency_ms"]
    flash = report["results"]["flash"]
    assert flash[0]["state_bytes"] == flash[1]["state_bytes"]            # fixed-size state
    tfm = report["results"]["transformer++"]
    assert tfm[1]["state_bytes"] > tfm[0]["state_bytes"]                 # the KV cache grows
    names = {t["name"] for t in report["targets"]}
    assert "flash_latency_flat" in names
    assert report["command"].startswith("flashgau bench decode") and "--preset tiny" in report["command"]
    md = (tmp_path / "decode.md").read_text()
    assert "| 40 |" in md and "decode.png" in md
    assert (tmp_path / "decode.png").stat().st_size > 1000


def test_decode_bench_rejects_bad_options(tmp_path, capsys):
    assert decode.main(["--positions", "0", "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err
    assert decode.main(["--archs", "gpt", "--preset", "tiny", "--out", str(tmp_path)]) == 2
