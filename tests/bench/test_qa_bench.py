"""`flashgau bench qa` at tiny size: each row is pre-trained then fine-tuned from its pre-trained run, both phases
saved and skipped on a rerun, the report gives the paper's columns (PT perplexity, EM / F1 and the choice score
beside the floors, latency reduction against Transformer+; a run saved before the choice score still reports), and
the rows carry the paper's settings (s x 4, first-to-all)."""

import json

import pytest

from flashgau import ModelConfig
from flashgau.bench import qa
from flashgau.errors import ConfigError


def _args(parse, out, corpus, *extra):
    return parse(qa, ["--quick", "--data", corpus, "--device", "cpu", "--precision", "fp32", "--out", out,
                      "--eval-windows", 2, *extra])


def test_rows_pretrain_then_finetune_and_report_the_papers_columns(tmp_path, small_corpus, parse, capsys):
    args = _args(parse, tmp_path, small_corpus, "--rows", "transformer+", "flash-s512-first-to-all")
    assert qa.run(args) == 0
    runs = tmp_path / "runs" / "qa-quick"
    saved = {p.name: json.loads(p.read_text()) for p in runs.glob("*.json")}
    assert len(saved) == 4                                              # two rows x (pre-training, fine-tuning)
    ft = next(r for name, r in saved.items() if "first-to-all-task" in name and name.endswith("-ft.json"))
    pt = next(r for name, r in saved.items() if "first-to-all-task" in name and name.endswith("-pt.json"))
    assert pt["train_config"]["objective"] == "lm" and ft["train_config"]["objective"] == "qa"
    assert ft["train_config"]["init_from"] == str(runs / pt["key"] / "pt")
    tiny = ModelConfig.for_context("tiny", arch="flash", context=512)
    assert ft["model_config"]["qk_dim"] == 4 * tiny.qk_dim and ft["model_config"]["first_to_all"] is True
    assert ft["model_config"]["chunk_size"] == qa.QA_CHUNK
    assert not list(runs.rglob("checkpoint.pt"))                        # removed once a row is done
    rep = json.loads((tmp_path / "qa-quick.json").read_text())
    rows = {r["row"]: r for r in rep["rows"]}
    assert rows["transformer+"]["pt_latency_reduction"] == pytest.approx(1.0)
    first = rows["flash-s512-first-to-all"]
    assert first["pt_latency_reduction"] > 0 and first["ft_latency_reduction"] > 0
    assert 0 <= first["f1"][0] <= 100 and first["examples"] == 200
    assert first["choice"] == [ft["final"]["choice"]] and 0 <= first["choice"][0] <= 100
    assert all(x["chosen"] in x["speakers"] for x in first["samples"])
    assert first["floor_frequent_f1"] > 0 and first["paper"][1] == 73.9
    md = (tmp_path / "qa-quick.md").read_text()
    assert "FLASH, s = 512 + first-to-all" in md and "most frequent speaker" in md
    assert "What the models write" in md and len(first["samples"]) == 5
    assert "| FT choice |" in md and "| chosen |" in md
    assert f"choice {first['choice'][0]:.1f}" in next(h["text"] for h in rep["headline"]
                                                       if h["text"].startswith("FLASH, s = 512 + first-to-all"))
    assert (tmp_path / "qa-quick.png").stat().st_size > 0
    capsys.readouterr()
    assert qa.run(args) == 0                                            # resumable: nothing trains again
    assert capsys.readouterr().out.count("done, skipped") == 2
    old = runs / f"{ft['key']}-ft.json"                                  # saved before the choice score existed
    record = json.loads(old.read_text())
    del record["final"]["choice"]
    for x in record["final"]["samples"]:
        del x["chosen"]
    old.write_text(json.dumps(record))
    assert qa.run(_args(parse, tmp_path, small_corpus, "--rows", "transformer+", "flash-s512-first-to-all",
                        "--report-only")) == 0
    rows = {r["row"]: r for r in json.loads((tmp_path / "qa-quick.json").read_text())["rows"]}
    assert rows["flash-s512-first-to-all"]["choice"] == [None] and rows["transformer+"]["choice"][0] is not None
    line = next(x for x in (tmp_path / "qa-quick.md").read_text().splitlines()
                if x.startswith("| FLASH, s = 512 + first-to-all |"))
    assert [c.strip() for c in line.split("|")][6] == "–"                # its FT choice cell


@pytest.mark.parametrize("option, value, message", [
    ("--context", 0, "--context must be >= 1"),
    ("--pretrain-seconds", 0, "--pretrain-seconds must be > 0"),
])
def test_bad_settings_are_one_line(option, value, message, tmp_path, small_corpus, parse):
    with pytest.raises(ConfigError, match=message):
        qa.settings_from_args(_args(parse, tmp_path, small_corpus, option, value))


def test_every_row_is_a_valid_model_at_the_default_settings(parse):
    s = qa.settings_from_args(parse(qa, ["--device", "cpu"]))
    for row in qa.ROWS:
        cfg = ModelConfig.for_context(s.preset, arch=row.arch, context=s.context, **qa.model_options(row, s))
        assert cfg.arch == row.arch
    assert len({s.key(row, 0) for row in qa.ROWS}) == len(qa.ROWS)
    # a saved run names the version of the examples it trained on: runs on older examples are not reused
    from flashgau.data.qa import TASK_VERSION
    old_key = s.key(qa.ROWS[0], 0).replace(f"-task{TASK_VERSION}", "")
    assert old_key != s.key(qa.ROWS[0], 0) and f"-task{TASK_VERSION}" in s.key(qa.ROWS[0], 0)


@pytest.mark.slow
def test_a_retrieval_task_trains_each_row_from_scratch_and_reports_accuracy_by_distance(tmp_path, small_corpus,
                                                                                         parse):
    args = _args(parse, tmp_path, small_corpus, "--task", "passkey", "--seconds", 1, "--rows", "transformer+",
                 "flash-s512-local")
    assert qa.run(args) == 0
    runs = tmp_path / "runs" / "retrieval-passkey-quick"
    saved = {p.name: json.loads(p.read_text()) for p in runs.glob("*.json")}
    assert len(saved) == 2 and not list(runs.rglob("checkpoint.pt"))
    local = next(r for name, r in saved.items() if "flash-s512-local" in name)
    assert local["train_config"]["objective"] == "passkey" and local["train_config"]["init_from"] is None
    assert local["model_config"]["mixed_chunk_parts"] == "local" and local["model_config"]["init_std"] == 0.1
    assert local["model_config"]["chunk_size"] == qa.QA_CHUNK
    rep = json.loads((tmp_path / "retrieval-passkey-quick.json").read_text())
    rows = {r["row"]: r for r in rep["rows"]}
    assert rows["transformer+"]["latency_reduction"] == pytest.approx(1.0)
    assert sum(rows["flash-s512-local"]["counts"]) == rows["flash-s512-local"]["questions"] == 200
    assert 0 <= rows["flash-s512-local"]["accuracy"][0] <= 100
    md = (tmp_path / "retrieval-passkey-quick.md").read_text()
    assert "| FLASH, s = 512, local only |" in md and "4+ chunks back" in md
    assert qa.run(_args(parse, tmp_path, small_corpus, "--task", "passkey", "--seconds", 1, "--rows",
                        "transformer+", "--report-only")) == 0


@pytest.mark.parametrize("extra, message", [
    (["--warm-context", 64], "--warm-context and --warm-seconds go together"),
    (["--warm-seconds", 1], "--warm-context and --warm-seconds go together"),
    (["--warm-context", 256, "--warm-seconds", 1], "--warm-context must be >= 1 and shorter than --context 256"),
    (["--warm-context", 64, "--warm-seconds", 0], "--warm-seconds must be > 0"),
])
def test_bad_curriculum_settings_are_one_line(extra, message, tmp_path, small_corpus, parse):
    from flashgau.bench.qa import retrieval

    args = _args(parse, tmp_path, small_corpus, "--task", "passkey", *extra)
    with pytest.raises(ConfigError, match=message):
        retrieval.settings_from_args(args, qa.RETRIEVAL_ROWS)


def test_retrieval_options_are_refused_on_the_who_speaks_task(tmp_path, small_corpus, parse):
    with pytest.raises(ConfigError, match="--seconds, --warm-context belong to the retrieval tasks"):
        qa.run(_args(parse, tmp_path, small_corpus, "--seconds", 5, "--warm-context", 64))


@pytest.mark.slow
def test_a_curriculum_row_trains_short_then_long_from_those_weights(tmp_path, small_corpus, parse):
    """--warm-context/--warm-seconds: the row's first stage at the short context from scratch, the second at
    --context with init_from the first's folder; the record keeps both, the report says so, and the key differs
    from the from-scratch run's."""
    from flashgau.bench.qa import retrieval

    args = _args(parse, tmp_path, small_corpus, "--task", "passkey", "--seconds", 10, "--warm-context", 128,
                 "--warm-seconds", 10, "--rows", "flash-s512")
    s = retrieval.settings_from_args(args, qa.RETRIEVAL_ROWS)
    plain = retrieval.settings_from_args(_args(parse, tmp_path, small_corpus, "--task", "passkey", "--seconds", 1),
                                         qa.RETRIEVAL_ROWS)
    row = qa.RETRIEVAL_ROWS[0]
    assert s.key(row, 0) != plain.key(row, 0) and "-warm128x10s-" in s.key(row, 0)
    assert qa.run(args) == 0
    saved = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "retrieval-passkey-quick").glob("*.json")]
    assert len(saved) == 1
    rec = saved[0]
    assert rec["warm"]["context"] == 128 and rec["warm"]["steps"] >= 1
    assert rec["train_config"]["context"] == 256 and rec["train_config"]["init_from"].endswith("/warm")
    assert rec["model_config"]["chunk_size"] == qa.QA_CHUNK and rec["model_config"]["init_std"] == 0.1
    assert not list((tmp_path / "runs").rglob("checkpoint.pt"))
    md = (tmp_path / "retrieval-passkey-quick.md").read_text()
    assert "at 128 from scratch, then 10 s at 256 from those weights" in md


def test_retrieval_rows_are_refused_on_the_who_speaks_task(tmp_path, small_corpus, parse):
    with pytest.raises(ConfigError, match="flash-s512-local belong to the retrieval tasks"):
        qa.run(_args(parse, tmp_path, small_corpus, "--rows", "flash-s512-local"))


def test_a_context_longer_than_the_preset_s_gives_every_row_that_max_seq_len(tmp_path, small_corpus, parse):
    """The tiny preset accepts 2,048 tokens; --context 4096 makes each row's model accept 4,096 from its first stage
    (the long stage takes the warm stage's model), and a context within the preset's leaves the model as it is."""
    from flashgau.bench.qa import retrieval

    for context, warm in ((4096, None), (4096, 128), (2048, 128)):
        extra = ["--warm-context", warm, "--warm-seconds", 1] if warm else []
        args = _args(parse, tmp_path, small_corpus, "--task", "passkey", "--preset", "tiny", "--context", context,
                     *extra)
        s = retrieval.settings_from_args(args, qa.RETRIEVAL_ROWS)
        for row in (*qa.ROWS, *qa.RETRIEVAL_ROWS):
            first = retrieval.row_config(row, 0, s, tmp_path, warm=bool(warm))
            assert first.model.get("max_seq_len") == (4096 if context == 4096 else None)
            cfg = first.model_config(256)
            assert cfg.max_seq_len == max(context, 2048)
            long = retrieval.row_config(row, 0, s, tmp_path, init_from=tmp_path / "warm")    # the warm stage's model
            assert long.model == ({"max_seq_len": 4096} if context == 4096 else {})
