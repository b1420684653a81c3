"""`flashgau bench decode` on a tiny model: it writes the three report files with every field, records the device,
precision and machine, and states FLASH's measured ratios."""

import json

from flashgau.bench import decode


def test_decode_bench_writes_reports(tmp_path):
    code = decode.main(["--archs", "flash", "transformer++", "--preset", "tiny", "--positions", "16", "40",
                        "--steps", "2", "--warmup", "1", "--device", "cpu", "--precision", "auto",
                        "--out", str(tmp_path)])
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
    s = report["settings"]
    assert s["device"] == "cpu" and s["precision"] in ("fp32", "bf16") and s["precision_reason"].startswith("auto")
    assert report["env"]["machine"]["device"] == "cpu" and report["env"]["machine"]["cpu"]
    names = {h["name"] for h in report["headline"]}
    assert names == {"flash_latency_growth", "flash_vs_transformer++_tokens_per_s"}
    assert report["command"].startswith("flashgau bench decode") and "--preset tiny" in report["command"]
    md = (tmp_path / "decode.md").read_text()
    assert "| 40 |" in md and "decode.png" in md and "device cpu" in md and "CPU capability" in md
    assert "FLASH tokens/s / transformer++ tokens/s: " in md and "target" not in md.lower()
    assert (tmp_path / "decode.png").stat().st_size > 1000


def test_decode_bench_rejects_bad_options(tmp_path, capsys):
    assert decode.main(["--positions", "0", "--out", str(tmp_path)]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert decode.main(["--archs", "gpt", "--preset", "tiny", "--out", str(tmp_path)]) == 2
    assert "unknown arch 'gpt'" in capsys.readouterr().err
