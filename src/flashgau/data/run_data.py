"""The data of one run: a prepared dataset (prepared.py), the run's tokenizer (the data's, or as the run's task makes
it: the masked-LM task adds a mask token) and the fingerprint of the split text. The training layer builds it
(training/setup.py); a task draws its training windows and held-out set from it."""

from __future__ import annotations

from dataclasses import dataclass

from .batching import HeldoutWindows, TokenDocuments, WindowSampler
from .prepared import PreparedData
from .tokenizers import Tokenizer

HELDOUT_NAMES_KEPT = 1000      # held-out document names a checkpoint records (all of them for smaller corpora)


@dataclass
class RunData:
    """The data of a run: a prepared dataset, its tokenizer and the fingerprint of its split text."""

    prepared: PreparedData
    tokenizer: Tokenizer
    fingerprint: str

    @property
    def train_docs(self) -> TokenDocuments:
        return self.prepared.train

    @property
    def heldout_docs(self) -> TokenDocuments:
        return self.prepared.heldout

    def sampler(self, context: int, seed: int, *, pack_documents: bool = False, rank: int = 0,
                world_size: int = 1) -> WindowSampler:
        docs = self.train_docs.packed() if pack_documents else self.train_docs
        return WindowSampler(docs, context, seed, rank=rank, world_size=world_size)

    def heldout(self, context: int) -> HeldoutWindows:
        return HeldoutWindows(self.heldout_docs, context)

    def describe(self) -> str:
        return self.prepared.describe()

    def heldout_names(self, limit: int = HELDOUT_NAMES_KEPT) -> list[str]:
        return self.prepared.names("heldout", limit)

    def first_heldout_line(self, chars: int = 80) -> str:
        """The first line (at most `chars` characters) of the first held-out document, leading blanks skipped:
        decoded from its first tokens, as many as it takes."""
        doc = self.heldout_docs
        n = 256
        while True:
            text = self.tokenizer.decode(doc.tokens(0, 0, n).tolist()).lstrip()
            lines = text.splitlines()
            # a few characters of margin: the last decoded character may be a cut multi-byte one
            if n >= int(doc.lengths[0]) or len(lines) > 1 or (lines and len(lines[0]) > chars + 4):
                return lines[0][:chars] if lines else ""
            n *= 2
