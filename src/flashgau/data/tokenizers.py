"""Tokenizers: raw UTF-8 bytes, or byte-level BPE trained with the HF `tokenizers` library.

Both map any text to ids and back exactly (`decode(encode(text)) == text`), and both know how many bytes of
UTF-8 each id stands for (`token_byte_lengths()`), which turns a per-token loss into bits per byte.

One save/load format for both: `tok.to_dict()` is a JSON-able dict ({"kind": "bytes"} or {"kind": "bpe",
"tokenizer_json": ...}); `tokenizer_from_dict(d)` rebuilds it. Checkpoints store this dict; `save_tokenizer`
and `load_tokenizer` write and read it as a JSON file.

A BPE can also come ready-made: `make_tokenizer("path/to/tokenizer.json")` reads a HF `tokenizers` file (GPT-2,
RoBERTa, Llama 3 and other byte-level BPEs; `load_tokenizer_file`, `load_tokenizer_json`). It must be byte-level,
so that every token stands for whole bytes and any text round-trips; others (SentencePiece-style, WordPiece) are
refused in one line.
Text is encoded without the special tokens a file's post-processor would add (no BOS/EOS): flashgau's documents
carry their own boundaries.

The mask token of masked language modelling (`tok.with_mask_token()`, what a `--objective mlm` run uses): one id
after the data's vocabulary (`base_vocab_size`; bytes: 256, so V = 257), saved in `to_dict()` (so it survives save
and load), decoded as its text ("<mask>"), standing for no bytes, and never produced by `encode`: the data never
holds it, only the masking of a training or held-out window puts it in. `without_mask_token()` gives the data's
tokenizer back (what prepared data and its digest are compared with).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from ..errors import TokenizerError

TOKENIZER_KINDS = ("bytes", "bpe")
MASK_TOKEN = "<mask>"


class _MaskToken:
    """The optional mask token (see the module docstring): id base_vocab_size, when `mask_token` is set."""

    base_vocab_size: int
    mask_token: Optional[str] = None

    @property
    def vocab_size(self) -> int:
        return self.base_vocab_size + (self.mask_token is not None)

    @property
    def mask_token_id(self) -> Optional[int]:
        return self.base_vocab_size if self.mask_token is not None else None

    def with_mask_token(self, text: str = MASK_TOKEN):
        """This tokenizer with a mask token (itself when it has that one already)."""
        if not isinstance(text, str) or not text:
            raise TokenizerError(f"the mask token must be a non-empty text, got {text!r}")
        return self if self.mask_token == text else self._copy(text)

    def without_mask_token(self):
        """The tokenizer of the data: this one without its mask token (itself when it has none)."""
        return self if self.mask_token is None else self._copy(None)

    def _copy(self, mask_token: Optional[str]):
        raise NotImplementedError

    def _mask_dict(self) -> dict:
        return {} if self.mask_token is None else {"mask_token": self.mask_token}

    def _decode_bytes(self, ids: Sequence[int], token_bytes) -> str:
        mask = self.mask_token_id
        return b"".join(self.mask_token.encode("utf-8") if i == mask else token_bytes(i)
                        for i in map(int, ids)).decode("utf-8", errors="replace")


class ByteTokenizer(_MaskToken):
    """One id per UTF-8 byte (V = 256; 257 with the mask token)."""

    kind = "bytes"
    base_vocab_size = 256

    def __init__(self, mask_token: Optional[str] = None) -> None:
        self.mask_token = mask_token

    def _copy(self, mask_token: Optional[str]) -> "ByteTokenizer":
        return ByteTokenizer(mask_token)

    def encode(self, text: str) -> list[int]:
        return list(_utf8(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        if self.mask_token is None:
            return bytes(int(i) for i in ids).decode("utf-8", errors="replace")
        return self._decode_bytes(ids, lambda i: bytes([i]))

    def token_byte_lengths(self) -> list[int]:
        return [1] * 256 + [0] * (self.vocab_size - 256)

    def to_dict(self) -> dict:
        return {"kind": "bytes", **self._mask_dict()}


class BPETokenizer(_MaskToken):
    """Byte-level BPE (GPT-2 style) over the HF `tokenizers` library; every byte is in the vocabulary, so any
    text can be encoded and decodes back exactly."""

    kind = "bpe"

    def __init__(self, hf_tokenizer, mask_token: Optional[str] = None) -> None:
        self._tok = hf_tokenizer
        self.base_vocab_size = hf_tokenizer.get_vocab_size()
        self.mask_token = mask_token

    def _copy(self, mask_token: Optional[str]) -> "BPETokenizer":
        return BPETokenizer(self._tok, mask_token)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> "BPETokenizer":
        """Learn merges from `texts` (pass the training split only) up to `vocab_size` ids (>= 257)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size <= 256:
            raise TokenizerError(f"BPE vocabulary size must be > 256 (the byte alphabet), got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=[], show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        _utf8(text)  # same clear error as ByteTokenizer for text that is not valid Unicode
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Many texts at once (in parallel inside the HF library)."""
        for text in texts:
            _utf8(text)
        return [enc.ids for enc in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._decode_bytes(ids, self._token_bytes)

    def token_byte_lengths(self) -> list[int]:
        return [len(self._token_bytes(i)) for i in range(self.base_vocab_size)] + [0] * (self.mask_token is not None)

    def to_dict(self) -> dict:
        return {"kind": "bpe", "tokenizer_json": self._tok.to_str(), **self._mask_dict()}

    def _token_bytes(self, i: int) -> bytes:
        piece = self._tok.id_to_token(i)
        if piece is None:
            raise TokenizerError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        decoder = _byte_decoder()
        try:
            return bytes(decoder[c] for c in piece)
        except KeyError:
            if piece in self._special():                # an added token such as <|endoftext|>: its literal text
                return piece.encode("utf-8")
            raise TokenizerError(f"token {i} ({piece!r}) is not made of byte-level characters") from None

    def _special(self) -> set:
        if not hasattr(self, "_added"):
            self._added = {t.content for t in self._tok.get_added_tokens_decoder().values()}
        return self._added


Tokenizer = Union[ByteTokenizer, BPETokenizer]


def make_tokenizer(kind: str, train_texts: Iterable[str] = (), vocab_size: int = 4096) -> Tokenizer:
    """"bytes", "bpe" trained on `train_texts`, or a tokenizer file (a path ending in .json)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.train(train_texts, vocab_size=vocab_size)
    if is_tokenizer_file(kind):
        return load_tokenizer_file(kind)
    raise TokenizerError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)} or a path to a "
                         "tokenizer.json")


def is_tokenizer_file(kind: str) -> bool:
    """Whether a --tokenizer value names a file (rather than "bytes" or "bpe")."""
    return isinstance(kind, str) and kind.lower().endswith(".json")


def load_tokenizer_file(path: Union[str, Path]) -> Tokenizer:
    """A tokenizer from a JSON file: flashgau's own format (save_tokenizer) or a HF `tokenizers` tokenizer.json of
    a byte-level BPE (load_tokenizer_json), which must also round-trip text exactly (TokenizerError otherwise)."""
    try:
        data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TokenizerError(f"cannot read tokenizer file {path}: {err}") from None
    if isinstance(data, dict) and "kind" in data:
        return tokenizer_from_dict(data)
    tok = load_tokenizer_json(Path(path).expanduser())
    probe = "Probe: héllo  wörld\n\t🙂 x"
    try:
        round_trip = tok.decode(tok.encode(probe))
        tok.token_byte_lengths()
    except TokenizerError:
        round_trip = None
    if round_trip != probe:
        raise TokenizerError(f"{path} does not round-trip text exactly (a normaliser or non-byte tokens?); flashgau "
                             "needs a byte-level BPE whose decode(encode(text)) == text")
    return tok


def tokenizer_from_dict(data: dict) -> Tokenizer:
    kind = data.get("kind") if isinstance(data, dict) else None
    mask = data.get("mask_token") if isinstance(data, dict) else None
    if mask is not None and not (isinstance(mask, str) and mask):
        raise TokenizerError(f"saved tokenizer has a mask token that is not a text: {mask!r}")
    if kind == "bytes":
        return ByteTokenizer(mask)
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return BPETokenizer(HFTokenizer.from_str(data["tokenizer_json"]), mask)
        except Exception as err:  # the HF library raises its own exception types
            raise TokenizerError(f"saved BPE tokenizer cannot be read: {err}") from None
    raise TokenizerError(f"saved tokenizer has unknown kind {kind!r}")


def tokenizer_digest(tok: Tokenizer) -> str:
    """SHA-256 of a tokenizer's saved form: equal digests, equal tokenizers."""
    return hashlib.sha256(json.dumps(tok.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


def save_tokenizer(tok: Tokenizer, path: Union[str, Path]) -> None:
    Path(path).write_text(json.dumps(tok.to_dict()), encoding="utf-8")


def load_tokenizer(path: Union[str, Path]) -> Tokenizer:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TokenizerError(f"cannot read tokenizer file {path}: {err}") from None
    return tokenizer_from_dict(data)


def load_tokenizer_json(path: Union[str, Path]) -> BPETokenizer:
    """A byte-level BPE tokenizer from a Hugging Face `tokenizer.json` file (one that `flashgau export` wrote, or a
    GPT-2 style one from elsewhere). Refuses, with TokenizerError, a file that cannot be read or a tokenizer that
    is not byte-level BPE (its ids would not map back to bytes)."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        text = Path(path).read_text(encoding="utf-8")
        data = json.loads(text)
        tok = HFTokenizer.from_str(text)
    except (OSError, ValueError) as err:
        raise TokenizerError(f"cannot read tokenizer file {path}: {err}") from None
    except Exception as err:  # the HF library raises its own exception types
        raise TokenizerError(f"{path} is not a tokenizer.json the tokenizers library can read: {err}") from None
    model = (data.get("model") or {}).get("type") if isinstance(data, dict) else None
    if model != "BPE" or '"ByteLevel"' not in json.dumps(data.get("pre_tokenizer")):
        raise TokenizerError(f"{path} holds a {model or 'unknown'} tokenizer without byte-level pre-tokenization; "
                             "flashgau takes byte-level BPE (GPT-2 style), whose every id maps back to bytes")
    return BPETokenizer(tok)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start:err.end].encode("unicode_escape").decode("ascii")
        raise TokenizerError(f"text cannot be encoded: it is not valid Unicode at character {err.start} "
                             f"({bad}); check the input's encoding") from None


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable character the byte-level BPE uses for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}
