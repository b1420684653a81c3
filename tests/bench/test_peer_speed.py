"""`flashgau bench peer-speed`: the arms time the step they name on the same tokens, the table's ratios are the
medians' and the per-round ones, bad settings and a missing FLASH-pytorch stop in one line."""

import json

import pytest
import torch

from flashgau.bench import common, learn_parity, peer_speed
from flashgau.errors import FlashgauError
from flashgau.ops import fastpath


@pytest.fixture
def no_peak_probe(monkeypatch):
    """The report's matmul probe (2048^3, ~1 s) replaced by a fixed figure: these tests read the times, not it."""
    monkeypatch.setattr(common, "matmul_peak", lambda *args, **kwargs: {"flops_per_s": 1e11})


def test_flashgau_arms_alone_write_a_report(monkeypatch, no_peak_probe, parse, tmp_path, capsys):
    monkeypatch.setattr(peer_speed, "lucidrains_available", lambda: False)
    out = tmp_path / "peer"
    args = parse(peer_speed, ["--preset", "tiny", "--shapes", "64x2", "32x1", "--arms", "flashgau", "flashgau-plain",
                              "--repeats", "2", "--warmup", "0", "--out", out])
    assert peer_speed.run(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    records = report["records"]
    assert [(r["context"], r["batch"], r["arm"]) for r in records] == [
        (64, 2, "flashgau"), (64, 2, "flashgau-plain"), (32, 1, "flashgau"), (32, 1, "flashgau-plain")]
    assert all(len(r["times_s"]) == 2 and min(r["times_s"]) > 0 for r in records)
    assert records[0]["params"] == records[1]["params"]                  # one model, fast paths on and off
    md = out.with_suffix(".md").read_text()
    assert "| 64 x 2 |" in md and "flashgau-plain / flashgau" in md and "lucidrains /" not in md
    assert "- command:" in md                                            # the run environment


def test_the_plain_arm_turns_every_fast_path_off(monkeypatch):
    seen = []
    model, logits_of = peer_speed.build("flashgau", "tiny", 32)
    ids = torch.randint(0, 256, (1, 33), generator=torch.Generator().manual_seed(0))

    def spy(model, x):
        seen.append(fastpath.enabled(next(iter(fastpath.FAST_PATHS))))
        return logits_of(model, x)

    plain, fast = (peer_speed.make_step(model, spy, ids, plain=p) for p in (True, False))
    loss_plain, loss_fast = plain(), fast()
    assert seen == [False, True]
    assert loss_plain == pytest.approx(loss_fast, rel=1e-5)               # the same model and tokens
    assert all(p.grad is None for p in model.parameters())               # gradients dropped after the step


def test_the_table_gives_the_medians_ratio_and_the_per_round_one():
    records = [dict(context=8192, batch=1, arm="flashgau", params=10, times_s=[1.0, 2.0, 1.5], median_s=1.5),
               dict(context=8192, batch=1, arm="lucidrains", params=12, times_s=[1.3, 2.2, 3.0], median_s=2.2)]
    lines = peer_speed.table(records, ["flashgau", "lucidrains"])
    assert lines[0].startswith("| T x B | flashgau s | lucidrains s | params flashgau / lucidrains |")
    # medians 2.2 / 1.5 = 1.47; per round 1.3, 1.1, 2.0 -> median 1.3
    assert lines[2] == "| 8192 x 1 | 1.500 | 2.200 | 10 / 12 | 1.47x; 1.30x |"


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "512"], "context x batch pairs"),
    (["--shapes", "0x2", "--arms", "flashgau"], "positive context x batch"),
    (["--repeats", "0", "--arms", "flashgau"], "--repeats must be at least 1"),
    (["--threads", "0", "--arms", "flashgau"], "--threads must be at least 1"),
])
def test_bad_settings_stop_in_one_line(parse, argv, message):
    with pytest.raises((FlashgauError, SystemExit), match=message):
        peer_speed.check(parse(peer_speed, argv))


def test_without_flash_pytorch_the_lucidrains_arm_says_how_to_install_it(monkeypatch, parse):
    monkeypatch.setattr(peer_speed, "lucidrains_available", lambda: False)
    with pytest.raises(FlashgauError, match="pip install flash-pytorch") as err:
        peer_speed.check(parse(peer_speed, ["--shapes", "64x1"]))
    assert "\n" not in str(err.value) and "--arms flashgau flashgau-plain" in str(err.value)


@pytest.mark.skipif(not learn_parity.lucidrains_available(), reason="flash-pytorch is not installed")
def test_the_lucidrains_arm_runs_beside_flashgau(no_peak_probe, parse, tmp_path):
    out = tmp_path / "peer"
    args = parse(peer_speed, ["--preset", "tiny", "--shapes", "64x1", "--repeats", "1", "--warmup", "0",
                              "--out", out])
    assert peer_speed.run(args) == 0
    records = json.loads(out.with_suffix(".json").read_text())["records"]
    assert [r["arm"] for r in records] == list(peer_speed.ARMS)
    assert "lucidrains / flashgau" in out.with_suffix(".md").read_text()
