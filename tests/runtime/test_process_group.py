"""The run's processes as one process sees them (runtime/distributed.py), without starting any: one process needs no
process group, a step's windows split evenly, the held-out set is shared out and sums back to one process's score,
a setup error reaches every process, a broken collective reads as one line. The multi-process runs themselves are in
tests/training/test_torchrun.py."""

import math

import pytest
import torch

from flashgau.data.batching import HeldoutWindows, tokenize_documents
from flashgau.data.tokenizers import ByteTokenizer
from flashgau.errors import ConfigError
from flashgau.runtime import Distributed, PeerFailed, join_process_group, resolve_device
from flashgau.runtime import distributed as dist_mod
from flashgau.runtime.launch import Launch, launch_rank, torchrun_launch
from flashgau.training.config import TrainConfig
from flashgau.tasks.lm import evaluate

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class Rank(Distributed):
    """Process `rank` of `world_size` with the collectives answered by the test: `reports` plays all_gather."""

    def __init__(self, rank, world_size, reports=None):
        super().__init__(rank=rank, world_size=world_size, timeout=7.0)
        self.reports = reports

    def _reduce(self, values, op):
        return [float(v) for v in values]          # this process's own part, to add up in the test

    def gather(self, obj):
        return self.reports


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)


def test_without_torchrun_one_process_and_no_communication(no_torchrun):
    with join_process_group("cpu") as dist:
        assert (dist.rank, dist.world_size, dist.is_main) == (0, 1, True)
        assert dist.sum([1, 2.5]) == [1.0, 2.5] and dist.max([3]) == [3.0] and dist.any(True) and dist.all(True)
        assert dist.broadcast({"a": 1}) == {"a": 1} and dist.gather(5) == [5]
        model = torch.nn.Linear(2, 2)
        assert dist.parallel(model, model) is model
        assert dist.model_state(model).keys() == model.state_dict().keys()
        with pytest.raises(KeyError, match="boom"):
            dist.settle(KeyError("boom"))
        assert dist.lost_peer(RuntimeError("gloo: Connection closed by peer")) is None
    assert not torch.distributed.is_initialized()
    with pytest.raises(ConfigError, match="--fsdp shards the model over the processes torchrun starts"):
        with join_process_group("cpu", fsdp=True):
            pass


def test_torchrun_environment_and_the_device_of_each_process(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert torchrun_launch() == Launch(3, 4, 1, 2) and launch_rank() == 3
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")   # a CPU machine: every process on the CPU
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK 4 of WORLD_SIZE 4"):
        torchrun_launch()
    assert launch_rank() == 0                          # reporting never fails on a bad environment


@pytest.mark.parametrize("text, ok", [("600", True), ("2.5", True), ("0", False), ("soon", False), ("inf", False)])
def test_the_collective_timeout_comes_from_the_environment(monkeypatch, text, ok):
    monkeypatch.setenv(dist_mod.TIMEOUT_ENV, text)
    if ok:
        assert dist_mod.collective_timeout() == float(text)
    else:
        with pytest.raises(ConfigError, match="FLASHGAU_DIST_TIMEOUT must be a number of seconds > 0"):
            dist_mod.collective_timeout()


def test_a_step_splits_evenly_over_the_processes_or_says_how():
    cfg = TrainConfig(context=32, batch_tokens=256, micro_batch_tokens=64, steps=1)      # 8 windows, 2 per pass
    assert cfg.split(1) == (cfg.micro_batch_size, cfg.accumulation_steps) == (2, 4)
    assert cfg.split(2) == (2, 2) and cfg.split(4) == (2, 1) and cfg.split(8) == (1, 1)
    with pytest.raises(ConfigError, match="8 windows .* do not split evenly over 3 processes"):
        cfg.split(3)


def test_the_held_out_set_is_shared_out_and_sums_to_the_one_process_score():
    tok = ByteTokenizer()
    docs = tokenize_documents(["It is a wise father that knows his own child.\n" * 20, "All that glisters. " * 9],
                              tok)
    windows = HeldoutWindows(docs, context=16)
    whole = [b.input_ids for b in windows.batches(3)]
    for world in (2, 3):
        parts = [[b.input_ids for b in windows.batches(3, rank=r, world_size=world)] for r in range(world)]
        assert sum(len(p) for p in parts) == len(whole)
        for i, ids in enumerate(whole):                          # batch i is rank i % world's (i // world)-th
            assert torch.equal(parts[i % world][i // world], ids)
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.embed = torch.nn.Embedding(256, 256)

    def forward(input_ids, attention_mask=None):
        from flashgau import LMOutput
        return LMOutput(logits=model.embed(input_ids))

    model.forward = forward
    one = evaluate(model, windows, tok.token_byte_lengths(), batch_size=3, limit=11)
    shares = [evaluate(model, windows, tok.token_byte_lengths(), batch_size=3, limit=11, dist=Rank(r, 2))
              for r in range(2)]
    assert sum(s.tokens for s in shares) == one.tokens and sum(s.windows for s in shares) == one.windows == 11
    nats = sum(s.loss * s.tokens for s in shares)
    assert nats == pytest.approx(one.loss * one.tokens, rel=1e-12)
    assert sum(s.bytes for s in shares) == one.bytes


def test_a_setup_error_reaches_every_process_and_one_of_them_reports_it():
    report = "CorpusError: no text at /data"
    with pytest.raises(PeerFailed, match="rank 1 failed: CorpusError: no text at /data"):
        Rank(0, 2, reports=[None, report]).settle(None)
    with pytest.raises(ValueError, match="mine"):
        Rank(1, 2, reports=[None, report]).settle(ValueError("mine"))
    with pytest.raises(PeerFailed, match="rank 0 failed"):                  # all failed: rank 0 reports
        Rank(1, 2, reports=[report, report]).settle(ValueError("same"))
    Rank(1, 2, reports=[None, None]).settle(None)
    with pytest.raises(ConfigError, match="do not agree on its step: rank 0 has 4, rank 2 has 3 .*same checkpoint"):
        Rank(0, 3, reports=[{"its step": 4}, {"its step": 4}, {"its step": 3}]).check_same(
            {"its step": 4}, hint=" (resume the same checkpoint)")


@pytest.mark.parametrize("error, words", [
    (RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:26778: Connection reset by peer. "
                  "This is typically caused by a remote worker hanging"), "rank 1 stopped responding (it died or "
                                                                          "closed its connection: Read error"),
    (RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 7000ms for recv operation to "
                  "complete"), "no answer within the 7 s collective timeout, FLASHGAU_DIST_TIMEOUT: Timed out"),
    (RuntimeError("CUDA out of memory"), None),
    (ValueError("gloo"), None),
])
def test_a_broken_collective_reads_as_one_line_naming_the_peer(error, words):
    said = Rank(0, 2).lost_peer(error)
    assert said is None if words is None else words in said and "This is typically" not in said
    if words is not None:
        assert "another process of the run" in Rank(0, 4).lost_peer(error)


def test_scalar_parameters_become_vectors_for_sharding_and_scalars_in_state_dicts():
    from flashgau.config import ModelConfig
    from flashgau.model import LanguageModel

    model = LanguageModel(ModelConfig.for_context("tiny", arch="flash", context=32, vocab_size=256))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = dist_mod._vectorize_scalars(model)
    assert names == ["sinusoid.scale"] and model.sinusoid.scale.shape == (1,)
    ids = torch.randint(0, 256, (2, 8))
    reference = LanguageModel(model.config)
    reference.load_state_dict(before)
    assert torch.equal(model(ids).logits, reference(ids).logits)          # broadcasting keeps the forward exact
    dist = Rank(0, 2)
    dist.scalars = frozenset(names)
    assert dist._unvector("sinusoid.scale", "exp_avg", torch.ones(1)).shape == () and dist._vector(
        "sinusoid.scale", "exp_avg", torch.ones(())).shape == (1,)
    assert dist._vector("sinusoid.scale", "step", torch.tensor(3.0)).shape == ()   # AdamW's step count: a scalar
    assert dist._vector("embed.weight", "exp_avg", torch.ones(())).shape == ()
    assert math.isclose(float(before["sinusoid.scale"]), float(model.sinusoid.scale.detach()))
