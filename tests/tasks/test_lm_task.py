"""The language-modelling task's held-out scoring (tasks/lm.py): loss, bits per byte (per UTF-8 byte, also for
BPE) and perplexity."""

import math

import pytest
import torch
from torch import nn

from flashgau import LMOutput
from flashgau.data.batching import HeldoutWindows, tokenize_documents
from flashgau.data.tokenizers import BPETokenizer, ByteTokenizer
from flashgau.tasks.lm import evaluate

TEXTS = ["It is a wise father that knows his own child.\n" * 30, "All that glisters is not gold; " * 20]


class Uniform(nn.Module):
    """Logits all zero: every token costs ln V nats."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.calls = []

    def forward(self, input_ids, attention_mask=None):
        self.calls.append(attention_mask)
        return LMOutput(logits=torch.zeros(*input_ids.shape, self.vocab))


class Oracle(nn.Module):
    """Puts all probability on the token after the input (the test's documents are known to it)."""

    def __init__(self, vocab, docs):
        super().__init__()
        self.vocab = vocab
        self.next = {}
        for d in docs:
            for a, b in zip(d[:-1].tolist(), d[1:].tolist()):
                self.next.setdefault(a, b)

    def forward(self, input_ids, attention_mask=None):
        logits = torch.full((*input_ids.shape, self.vocab), -1e4)
        for idx in range(input_ids.shape[0]):
            for t in range(input_ids.shape[1]):
                logits[idx, t, self.next.get(int(input_ids[idx, t]), 0)] = 1e4
        return LMOutput(logits=logits)


@pytest.mark.parametrize("kind", ["bytes", "bpe"])
def test_uniform_model_costs_log_v_per_token(kind):
    tok = ByteTokenizer() if kind == "bytes" else BPETokenizer.train(TEXTS, vocab_size=300)
    docs = tokenize_documents(TEXTS, tok)
    windows = HeldoutWindows(docs, context=16)
    result = evaluate(Uniform(tok.vocab_size), windows, tok.token_byte_lengths(), batch_size=5)
    n_tokens = sum(len(d) - 1 for d in docs)
    n_bytes = sum(len(t.encode()) for t in TEXTS) - sum(tok.token_byte_lengths()[int(d[0])] for d in docs)
    assert result.tokens == n_tokens and result.bytes == n_bytes and result.windows == len(windows)
    assert result.loss == pytest.approx(math.log(tok.vocab_size), rel=1e-6)
    assert result.perplexity == pytest.approx(tok.vocab_size, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(math.log2(tok.vocab_size) * n_tokens / n_bytes, rel=1e-6)
    if kind == "bpe":
        assert result.bytes > 2 * result.tokens  # tokens span several bytes, and bpb counts bytes


def test_a_perfect_model_scores_zero_and_padding_is_masked():
    tok = ByteTokenizer()
    docs = tokenize_documents(["abcdefghij", "xyz"], tok)  # "xyz" is shorter than the context: padded
    model = Uniform(256)
    evaluate(model, HeldoutWindows(docs, context=8), tok.token_byte_lengths())
    assert any(mask is not None and not mask.all() for mask in model.calls)
    result = evaluate(Oracle(256, docs), HeldoutWindows(docs, context=8), tok.token_byte_lengths())
    assert result.loss == pytest.approx(0.0, abs=1e-6) and result.tokens == 9 + 2


def test_limit_scores_a_fixed_subset_and_restores_training_mode():
    tok = ByteTokenizer()
    windows = HeldoutWindows(tokenize_documents(TEXTS, tok), context=16)
    model = Uniform(256).train()
    result = evaluate(model, windows, tok.token_byte_lengths(), limit=7)
    assert result.windows == 7 and model.training
