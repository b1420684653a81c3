"""The masked-language-modelling task (`--objective mlm`): a bidirectional model restores corrupted tokens.

Corruption (BERT's): in every window, 15% of the real tokens (rounded, at least one) are chosen uniformly at random;
of those, 80% are replaced by the mask token, 10% by a token drawn uniformly from the data's vocabulary (never the
mask token), and 10% are kept. The labels are the original tokens at the chosen positions and -100 everywhere else,
so the loss (the model's mean cross-entropy over labels that are not -100) counts the chosen positions only.

- Training: the LM task's random windows (their T inputs; the next-token labels are dropped), corrupted with the
  run's own generator (seed + 1), whose state is saved with the window sampler's in the checkpoint: a resumed run
  masks exactly what an uninterrupted one would. Several processes (rank r of W) draw the corruption of all W
  ranks' windows and take rows r, r + W, ..., as the window sampler does.
- Held-out: the LM task's fixed windows, each corrupted by a generator seeded with HELDOUT_SEED + its window
  number, on the positions that window scores for the first time (a document's last window overlaps the one
  before it). The masked positions, and what is put there, depend only on the held-out tokens, the context and the
  tokenizer: every run and every arch is scored on exactly the same positions, in any batch size or subset.
- Metric: masked-token loss (mean nats per chosen token), accuracy (share of chosen tokens whose most likely
  prediction is the original token) and perplexity (exp of the loss).
- Use: `fill_masks` fills the mask markers of a text (`flashgau fill`).

Shapes: B batch, T tokens, V vocabulary.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from ..data.batching import IGNORE_INDEX, Batch, HeldoutWindows, TokenDocuments, WindowSampler
from ..data.run_data import RunData
from ..data.tokenizers import Tokenizer
from ..errors import ConfigError, TokenizerError
from ..runtime import Distributed, Precision
from .base import Score, Task, eval_mode, shared_logits

MASK_RATE = 0.15         # share of a window's real tokens chosen
MASK_SHARE = 0.8         # of the chosen: replaced by the mask token
RANDOM_SHARE = 0.1       # of the chosen: replaced by a random token (the rest, 10%, are kept)
HELDOUT_SEED = 14        # held-out window j is masked by a generator seeded with HELDOUT_SEED + j
MASKING_SEED_OFFSET = 1  # the training corruption's generator: the run's seed + this
MARKERS = ("[MASK]",)    # accepted by fill_masks besides the tokenizer's own mask token ("<mask>")


# ------------------------------------------------------------------------------------------------ corruption

@dataclass
class Draws:
    """The random numbers that corrupt R windows of T tokens, drawn in one fixed order (so a generator advances by
    the same amount whatever the tokens are): order (R, T) uniform, which positions are chosen; kind (R, T)
    uniform, what a chosen position becomes; token (R, T) ids, the random replacements."""

    order: torch.Tensor
    kind: torch.Tensor
    token: torch.Tensor

    @classmethod
    def draw(cls, rows: int, length: int, generator: torch.Generator, vocab: int) -> "Draws":
        return cls(torch.rand(rows, length, generator=generator), torch.rand(rows, length, generator=generator),
                   torch.randint(vocab, (rows, length), generator=generator))

    def rows(self, index) -> "Draws":
        return Draws(self.order[index], self.kind[index], self.token[index])


def corrupt(input_ids: torch.Tensor, eligible: torch.Tensor, draws: Draws, *,
            mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of `input_ids` (B, T) on the `eligible` (B, T) bool positions: (inputs, labels), labels
    the original ids at the chosen positions and -100 elsewhere (see the module docstring)."""
    n = eligible.sum(1)
    k = torch.minimum((n.double() * MASK_RATE).round().long().clamp(min=1), n)
    rank = draws.order.masked_fill(~eligible, 2.0).argsort(1).argsort(1)       # ineligible positions rank last
    chosen = rank < k[:, None]
    to_mask = chosen & (draws.kind < MASK_SHARE)
    to_random = chosen & (draws.kind >= MASK_SHARE) & (draws.kind < MASK_SHARE + RANDOM_SHARE)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(to_random, draws.token.to(input_ids.dtype), inputs)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    return inputs, labels


def _check_mask_token(tokenizer: Tokenizer) -> int:
    if getattr(tokenizer, "mask_token_id", None) is None:
        raise ConfigError("masked language modelling needs a tokenizer with a mask token "
                          "(tokenizer.with_mask_token())")
    return tokenizer.mask_token_id


class MaskedWindows:
    """The training stream of an MLM run: random windows (a WindowSampler), corrupted by a generator of its own."""

    def __init__(self, windows: WindowSampler, tokenizer: Tokenizer, seed: int) -> None:
        self.windows = windows
        self.mask_id = _check_mask_token(tokenizer)
        self.vocab = tokenizer.base_vocab_size
        self.generator = torch.Generator().manual_seed(seed + MASKING_SEED_OFFSET)

    def next_batch(self, batch_size: int) -> Batch:
        batch = self.windows.next_batch(batch_size)
        rank, world = self.windows.rank, self.windows.world_size
        draws = Draws.draw(batch_size * world, self.windows.context, self.generator, self.vocab)
        real = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.input_ids,
                                                                                              dtype=torch.bool)
        inputs, labels = corrupt(batch.input_ids, real, draws.rows(slice(rank, None, world)), mask_id=self.mask_id)
        return Batch(inputs, labels, batch.attention_mask, segment_ids=batch.segment_ids)

    def state_dict(self) -> dict:
        return {"windows": self.windows.state_dict(), "masking": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.windows.load_state_dict(state["windows"])
        self.generator.set_state(state["masking"])


# ------------------------------------------------------------------------------------------------ held-out

@dataclass
class MLMEvalResult(Score):
    loss: float            # mean nats per masked (chosen) token
    accuracy: float        # share of masked tokens whose most likely prediction is the original
    perplexity: float      # exp(loss)
    tokens: int            # masked tokens scored
    windows: int
    all_windows: bool = True

    RECORD = {"heldout_loss": "loss", "heldout_accuracy": "accuracy"}
    BRIEF = "masked-token loss {loss:.4f}, accuracy {accuracy:.2%}"
    HEADLINE = "masked-token loss: {loss:.4f} nats (accuracy {accuracy:.2%})"
    DESCRIBE = ("masked-token loss {loss:.4f} nats/token | accuracy {accuracy:.2%} | perplexity {perplexity:.2f} "
                "({tokens:,} masked tokens, {windows:,} windows{subset})")
    REPORT = ("masked-token loss: {loss:.4f} nats/token\naccuracy: {accuracy:.4f}\nperplexity: {perplexity:.3f} per "
              "masked token\nmasked tokens: {tokens:,}  windows: {windows:,}")


@dataclass
class MLMHeldout:
    """The fixed held-out windows of an MLM run with their fixed masked positions (see the module docstring)."""

    windows: HeldoutWindows
    tokenizer: Tokenizer

    def __post_init__(self) -> None:
        self.mask_id = _check_mask_token(self.tokenizer)

    def __len__(self) -> int:
        return len(self.windows)

    def batches(self, batch_size: int, limit: Optional[int] = None, *, rank: int = 0, world_size: int = 1):
        """The held-out batches, masked: labels are the original tokens at the masked positions (process `rank`
        of `world_size` takes its share of them, HeldoutWindows.batches)."""
        T = self.windows.context
        for batch in self.windows.batches(batch_size, limit=limit, rank=rank, world_size=world_size):
            draws = [Draws.draw(1, T, torch.Generator().manual_seed(HELDOUT_SEED + int(j)),
                                self.tokenizer.base_vocab_size) for j in batch.index]
            draws = Draws(*(torch.cat([getattr(d, name) for d in draws]) for name in ("order", "kind", "token")))
            real = batch.attention_mask if batch.attention_mask is not None else torch.ones_like(batch.labels,
                                                                                                 dtype=torch.bool)
            first_new = (batch.labels != IGNORE_INDEX).long().argmax(1)       # the tail window's overlap ends here
            eligible = real & (torch.arange(T)[None, :] >= first_new[:, None])
            inputs, labels = corrupt(batch.input_ids, eligible, draws, mask_id=self.mask_id)
            yield Batch(inputs, labels, batch.attention_mask, batch.index, batch.segment_ids)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, *, batch_size: int = 8, precision: Optional[Precision] = None,
                 limit: Optional[int] = None, dist: Optional[Distributed] = None) -> MLMEvalResult:
        dist = dist if dist is not None else Distributed()
        nats, right, tokens, count = 0.0, 0, 0, 0

        def batches(rank: int, world_size: int):
            return self.batches(batch_size, limit, rank=rank, world_size=world_size)

        for batch, logits in shared_logits(model, self.windows, batches, batch_size, limit, precision, dist):
            scored = batch.labels != IGNORE_INDEX
            nats += float(F.cross_entropy(logits[scored], batch.labels[scored], reduction="sum"))
            right += int((logits[scored].argmax(-1) == batch.labels[scored]).sum())
            tokens += int(scored.sum())
            count += batch.labels.shape[0]
        nats, right, tokens, count = dist.sum([nats, right, tokens, count])
        right, tokens, count = int(right), int(tokens), int(count)
        loss = nats / max(tokens, 1)
        return MLMEvalResult(loss=loss, accuracy=right / max(tokens, 1), perplexity=math.exp(min(loss, 700.0)),
                             tokens=tokens, windows=count, all_windows=limit is None or limit >= len(self.windows))


class MLMTask(Task):
    name = "mlm"
    causal = False
    generates = False
    describe = "masked language modelling: a bidirectional model restores 15% of the tokens, corrupted BERT-style"
    no_sample = ("(its model does not continue text): leave sample_tokens at 0, and fill masks with `flashgau fill "
                 "RUN --text ...` after training")

    def tokenizer(self, data_tokenizer: Tokenizer) -> Tokenizer:
        return data_tokenizer.with_mask_token()

    def training_stream(self, data: RunData, *, context: int, seed: int, pack_documents: bool = False,
                        rank: int = 0, world_size: int = 1) -> MaskedWindows:
        windows = data.sampler(context, seed, pack_documents=pack_documents, rank=rank, world_size=world_size)
        return MaskedWindows(windows, data.tokenizer, seed)

    def heldout(self, docs: TokenDocuments, tokenizer: Tokenizer, context: int) -> MLMHeldout:
        return MLMHeldout(HeldoutWindows(docs, context), tokenizer)


# ------------------------------------------------------------------------------------------------ fill

@dataclass
class Candidate:
    text: str              # the token decoded on its own
    token_id: int
    probability: float


@dataclass
class MaskFill:
    position: int          # index of the masked token in the encoded text
    order: int             # 1 for the mask filled first (the most confident), 2 next, ...
    candidates: list[Candidate] = field(default_factory=list)   # most likely first; the first one is put in

    @property
    def chosen(self) -> Candidate:
        return self.candidates[0]


@dataclass
class FillResult:
    text: str              # the text with every mask filled
    masks: list[MaskFill]  # in the order of the text

    def describe(self) -> str:
        lines = [self.text]
        for i, m in enumerate(self.masks, 1):
            cands = "  ".join(f"{c.text!r} {c.probability:.3f}" for c in m.candidates)
            lines.append(f"mask {i} (filled {m.order}{_ordinal(m.order)}): {cands}")
        return "\n".join(lines)


def fill_masks(model: torch.nn.Module, tokenizer: Tokenizer, text: str, *, top_k: int = 5,
               precision: Optional[Precision] = None) -> FillResult:
    """Fill the mask markers of `text` with a masked language model and its tokenizer (what `flashgau fill` does).

    Each marker (the tokenizer's mask token, "<mask>", or "[MASK]") stands for one token: write one per token
    (byte tokens: one per byte). The masks are filled one at a time, most confident first: every pass runs the
    model on the text with the masks filled so far, and puts the most likely token (never the mask token) into the
    remaining mask whose best candidate is the most likely. Each mask reports the `top_k` candidates of the pass
    that filled it, with the model's probabilities (as pipeline("fill-mask") gives them for one mask). Runs on the
    model's device in `precision` (None: its dtype)."""
    config = model.config
    if config.causal:
        raise ConfigError("this is a causal language model: it continues text (flashgau sample) rather than "
                          "filling masks; fill needs a masked-LM run (flashgau train --objective mlm)")
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None or tokenizer.vocab_size != config.vocab_size:
        raise ConfigError("this model's tokenizer has no mask token: fill needs a masked-LM run "
                          "(flashgau train --objective mlm)")
    if not (isinstance(top_k, int) and top_k >= 1):
        raise ConfigError(f"top_k must be a positive integer, got {top_k!r}")
    if not isinstance(text, str):
        raise TokenizerError(f"the text must be a string, got {type(text).__name__}")
    markers = (tokenizer.mask_token,) + tuple(m for m in MARKERS if m != tokenizer.mask_token)
    pieces = re.split("(" + "|".join(map(re.escape, markers)) + ")", text)
    ids: list[int] = []
    positions: list[int] = []
    for i, piece in enumerate(pieces):
        if i % 2:
            positions.append(len(ids))
            ids.append(mask_id)
        elif piece:
            ids += tokenizer.encode(piece)
    if not positions:
        raise ConfigError(f"the text has no mask marker: write {markers[0]} (or {' or '.join(markers[1:])}) where "
                          "a token is to be filled, one marker per token")
    if len(ids) > config.max_seq_len:
        raise ConfigError(f"the text is {len(ids)} tokens, more than the model's max_seq_len {config.max_seq_len}")
    device = next(model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=device)
    fills: dict[int, MaskFill] = {}
    with eval_mode(model):
        while len(fills) < len(positions):
            with precision.autocast() if precision is not None else contextlib.nullcontext():
                logits = model(x).logits[0].float()
            todo = [p for p in positions if p not in fills]
            probs = logits[todo].softmax(-1)[:, :tokenizer.base_vocab_size]   # the mask token is never a fill
            best = int(probs.amax(-1).argmax())
            top = probs[best].topk(min(top_k, probs.shape[-1]))
            where = todo[best]
            fills[where] = MaskFill(where, len(fills) + 1, [
                Candidate(tokenizer.decode([int(t)]), int(t), float(p)) for p, t in zip(top.values, top.indices)])
            x[0, where] = int(top.indices[0])
    return FillResult(tokenizer.decode(x[0].tolist()), [fills[p] for p in positions])


def _ordinal(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
