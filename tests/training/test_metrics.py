"""The JSONL metrics log and the loss plot."""

from flashgau.training.metrics import MetricsLog, plot_losses, read_metrics


def test_log_appends_truncates_and_ignores_a_torn_line(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl")
    for step in range(1, 6):
        log.append({"kind": "train", "step": step, "loss": 1.0 / step, "elapsed": step * 0.5})
    log.append({"kind": "final", "step": 5, "heldout_loss": 0.1})
    with open(log.path, "a") as handle:
        handle.write('{"kind": "train", "st')  # a crash in the middle of a write
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 3, 4, 5, 5]
    log.truncate_after(3)
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 3]
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_plot_writes_a_png(tmp_path):
    records = [{"kind": "train", "step": s, "loss": 5.0 / s, "elapsed": 2.0 * s} for s in range(1, 50)]
    records += [{"kind": "eval", "step": s, "heldout_loss": 6.0 / s, "elapsed": 2.0 * s} for s in (10, 20, 49)]
    records += [{"kind": "final", "step": 49, "heldout_loss": 0.12, "elapsed": 98.0}]
    path = plot_losses(records, tmp_path / "loss.png", title="t")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed into place
