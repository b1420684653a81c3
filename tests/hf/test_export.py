"""`flashgau export RUN OUT` and what HF does with the folder: from_pretrained gives the run's logits,
pipeline("text-generation") writes what flashgau's greedy decoding writes, the BPE tokenizer travels as
tokenizer.json, the model card gives the held-out bits per byte; pipeline("fill-mask") runs on a saved encoder and,
on an exported masked-LM run (bytes and BPE), gives flashgau's own fill candidates."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from hf_helpers import NEEDS_HF

pytest.importorskip("transformers", reason=NEEDS_HF)

import transformers.modeling_utils as hf_modeling_utils  # noqa: E402
from safetensors import SafetensorError  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline  # noqa: E402

from flashgau.cli import main  # noqa: E402
from flashgau.data.tokenizers import load_tokenizer_json  # noqa: E402
from flashgau.hf import FlashgauBPETokenizer, FlashgauByteTokenizer, FlashgauForMaskedLM  # noqa: E402
from flashgau.tasks.mlm import fill_masks  # noqa: E402
from flashgau.training.trained import load_trained  # noqa: E402

TINY = ["--preset", "tiny", "--context", "32", "--batch-tokens", "128", "--lr", "1e-2", "--precision", "fp32",
        "--eval-windows", "4", "--no-progress", "--sample-tokens", "0", "--steps", "4"]


@pytest.fixture(scope="module", params=[("flash", "bytes"), ("transformer++", "bpe")], ids=["flash-bytes", "tfm-bpe"])
def exported(request, small_corpus, tmp_path_factory):
    arch, tokenizer = request.param
    root = tmp_path_factory.mktemp(f"export-{arch}")
    run, out = root / "run", root / "hf"
    extra = ["--bpe-vocab-size", "300"] if tokenizer == "bpe" else []
    assert main(["train", *TINY, "--arch", arch, "--tokenizer", tokenizer, *extra, "--data", str(small_corpus),
                 "--out", str(run)]) == 0
    assert main(["export", str(run), str(out)]) == 0
    return run, out


def test_export_writes_an_hf_folder_with_a_model_card(exported):
    run, out = exported
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "README.md"} <= {p.name for p in out.iterdir()}
    bpb = json.loads((run / "summary.json").read_text())["final"]["bits_per_byte"]
    card = (out / "README.md").read_text()
    assert f"{bpb:.4f} bits per byte" in card and "not FlashAttention" in card


def test_a_checkpoint_without_its_summary_exports_without_a_score(exported, tmp_path):
    run, _ = exported
    (tmp_path / "alone").mkdir()
    shutil.copy(run / "checkpoint.pt", tmp_path / "alone" / "checkpoint.pt")
    assert main(["export", str(tmp_path / "alone" / "checkpoint.pt"), str(tmp_path / "hf")]) == 0
    assert "held-out score: not recorded" in (tmp_path / "hf" / "README.md").read_text()


def test_from_pretrained_gives_the_runs_logits(exported):
    run, out = exported
    trained = load_trained(run)
    model = AutoModelForCausalLM.from_pretrained(out)
    x = torch.tensor([trained.tokenizer.encode("KING. Good morrow, my lord.")])
    with torch.no_grad():
        assert torch.equal(model(x).logits, trained.model(x).logits)


def test_the_tokenizer_loads_and_encodes_as_the_runs(exported):
    run, out = exported
    trained = load_trained(run)
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "ROMEO. But soft, what light through yonder window breaks? Ā\x00"
    assert tokenizer(text)["input_ids"] == trained.tokenizer.encode(text)
    assert tokenizer.model_max_length == trained.model.config.max_seq_len
    if trained.tokenizer.kind == "bpe":
        assert isinstance(tokenizer, FlashgauBPETokenizer)
        assert load_tokenizer_json(out / "tokenizer.json").encode(text) == trained.tokenizer.encode(text)
    else:
        assert isinstance(tokenizer, FlashgauByteTokenizer)


def test_text_generation_pipeline_writes_flashgaus_greedy_text(exported):
    run, out = exported
    trained = load_trained(run)
    prompt = "KING. "
    ids = torch.tensor([trained.tokenizer.encode(prompt)])
    want = trained.tokenizer.decode(trained.model.generate(ids, 12, temperature=0)[0, ids.shape[1]:].tolist())
    generator = pipeline("text-generation", model=str(out))
    got = generator(prompt, max_new_tokens=12, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert got == want
    batch = generator(["KING.", "ROMEO. Is the day so young?"], max_new_tokens=5, do_sample=False, batch_size=2)
    assert len(batch) == 2 and batch[1][0]["generated_text"].startswith("ROMEO.")


def test_export_errors_are_one_line(exported, tmp_path, capsys):
    run, out = exported
    assert main(["export", str(run), str(out)]) == 1                        # already holds files
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert main(["export", str(run), str(out), "--overwrite"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flashgau export: error: no checkpoint at")


def test_fill_mask_pipeline_runs_on_a_saved_encoder(build, tmp_path):
    encoder = build("flash", causal=False, vocab_size=257)       # 256 bytes + the mask token
    FlashgauForMaskedLM.from_language_model(encoder, pad_token_id=0).save_pretrained(tmp_path)
    tokenizer = FlashgauByteTokenizer(mask_token="<mask>")
    tokenizer.save_pretrained(tmp_path)
    fill = pipeline("fill-mask", model=str(tmp_path))
    guesses = fill("To be, or not<mask>to be", top_k=3)
    ids = torch.tensor([tokenizer("To be, or not<mask>to be")["input_ids"]])
    with torch.no_grad():
        logits = encoder(ids).logits[0, ids[0].tolist().index(256)]
    assert [g["token"] for g in guesses] == logits.topk(3).indices.tolist()


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_an_exported_mlm_run_fills_masks_in_the_pipeline_as_flashgau_does(tokenizer, small_corpus, tmp_path):
    extra = ["--bpe-vocab-size", "300"] if tokenizer == "bpe" else []
    run, out = tmp_path / "run", tmp_path / "hf"
    assert main(["train", *TINY, "--objective", "mlm", "--tokenizer", tokenizer, *extra, "--data",
                 str(small_corpus), "--out", str(run)]) == 0
    assert main(["export", str(run), str(out)]) == 0
    card = (out / "README.md").read_text()
    assert "pipeline_tag: fill-mask" in card and "masked-token loss" in card and "mask token <mask>" in card
    trained = load_trained(run)
    hf_tok = AutoTokenizer.from_pretrained(out)
    assert hf_tok.mask_token == "<mask>" and hf_tok.mask_token_id == trained.tokenizer.mask_token_id
    text = "KING. Good morrow, my<mask>lord."
    want = fill_masks(trained.model, trained.tokenizer, text, top_k=4).masks[0].candidates
    guesses = pipeline("fill-mask", model=str(out))(text, top_k=4)
    assert [g["token"] for g in guesses] == [c.token_id for c in want]
    assert [g["score"] for g in guesses] == pytest.approx([c.probability for c in want], rel=1e-3)


# ------------------------------------------------------------------ all or none: a full disk, a kill, two writers

@pytest.fixture(scope="module")
def one_run(small_corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("export-faults") / "run"
    assert main(["train", *TINY, "--data", str(small_corpus), "--out", str(run)]) == 0
    return run


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else None


def weights_then(failure):
    """A safetensors writer that writes half of the weights file, then fails as `failure` says."""
    real = hf_modeling_utils.safe_save_file

    def half(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        failure()

    return half


def full_disk_oserror():
    raise OSError(errno.ENOSPC, "No space left on device")


def full_disk_safetensors():
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("failure", [full_disk_oserror, full_disk_safetensors], ids=["oserror", "safetensors"])
@pytest.mark.parametrize("before", ["absent", "an earlier export"])
def test_a_full_disk_during_export_leaves_one_line_and_nothing_half_written(one_run, tmp_path, capsys, monkeypatch,
                                                                             failure, before):
    out = tmp_path / "hf"
    if before != "absent":
        assert main(["export", str(one_run), str(out)]) == 0
    was = snapshot(out)
    monkeypatch.setattr(hf_modeling_utils, "safe_save_file", weights_then(failure))
    assert main(["export", str(one_run), str(out), "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot write {out}: the disk is full" in err and "nothing was written" in err
    assert snapshot(out) == was and sorted(os.listdir(tmp_path)) == (["hf"] if was else [])


def test_an_export_killed_while_writing_leaves_nothing_and_the_next_one_cleans_up(one_run, tmp_path):
    out = tmp_path / "hf"
    code = ("import os, signal, sys\nimport transformers.modeling_utils as m\nfrom flashgau.cli import main\n"
            "real = m.safe_save_file\n"
            "def killed(tensors, filename, metadata=None):\n"
            "    real(tensors, filename, metadata=metadata)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "m.safe_save_file = killed\n"
            f"main(['export', {str(one_run)!r}, {str(out)!r}])\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and len(os.listdir(tmp_path)) == 1               # only the killed export's staging
    assert main(["export", str(one_run), str(out)]) == 0
    assert os.listdir(tmp_path) == ["hf"] and {"config.json", "model.safetensors"} <= set(os.listdir(out))


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_exports_into_one_folder_never_mix(one_run, small_corpus, tmp_path, capsys, monkeypatch, overwrite):
    """The second export writes while the first finishes: without --overwrite it refuses (the folder was empty when
    it started, not when it ended); with it, its complete set replaces the first's."""
    other = tmp_path / "other"
    assert main(["train", *TINY, "--seed", "3", "--data", str(small_corpus), "--out", str(other)]) == 0
    out = tmp_path / "hf"
    real = hf_modeling_utils.safe_save_file

    def meanwhile(tensors, filename, metadata=None):
        monkeypatch.setattr(hf_modeling_utils, "safe_save_file", real)
        assert main(["export", str(other), str(out)]) == 0                   # the first export, finished
        real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(hf_modeling_utils, "safe_save_file", meanwhile)
    capsys.readouterr()
    code = main(["export", str(one_run), str(out)] + (["--overwrite"] if overwrite else []))
    err = capsys.readouterr().err
    winner = one_run if overwrite else other
    if overwrite:
        assert code == 0 and err == ""
    else:
        assert code == 1 and err.count("\n") == 1 and "filled by another process" in err
    model = AutoModelForCausalLM.from_pretrained(out)
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(x).logits, load_trained(winner).model(x).logits)
    assert sorted(os.listdir(tmp_path)) == ["hf", "other"]
