"""flashgau's tokenizers as Hugging Face tokenizers, encoding every text to exactly the ids flashgau's do.

- FlashgauByteTokenizer (a PreTrainedTokenizer): one id per UTF-8 byte (ids 0-255), then any special tokens that
  are not bytes (e.g. mask_token="<mask>": id 256). Nothing to store but tokenizer_config.json.
- FlashgauBPETokenizer (a PreTrainedTokenizerFast): the byte-level BPE, saved as `tokenizer.json`.

Padding. flashgau's vocabularies have no padding token, so both name the token of the byte 0 (NUL) as pad_token:
an id the model knows, that real text practically never holds (batches carry attention_mask anyway, and the model
ignores what sits under padding). It is only a name for an existing id: it is not added to the vocabulary, and a
text keeps its exact ids. Special tokens that are new to the vocabulary (a mask token) are added after it. Both pad
on the left by default, as HF's generate expects of decoder-only models; the models take either side.

`to_hf_tokenizer(tok)` converts a flashgau tokenizer (data.tokenizers) into the matching class.
"""

from __future__ import annotations

from typing import Optional

from transformers import PreTrainedTokenizer, PreTrainedTokenizerFast

from ..data.tokenizers import BPETokenizer, ByteTokenizer, Tokenizer
from .remote_code import copy_code_files

NUL = "\x00"


class _SavesCodeFiles:
    """save_pretrained, plus the code files the saved auto_map names (a tokenizer of a folder written by `flashgau
    export`, or loaded from one): a folder that loaded by path alone still does once saved again."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        files = super().save_pretrained(save_directory, *args, **kwargs)
        copy_code_files(save_directory)
        return files


class FlashgauByteTokenizer(_SavesCodeFiles, PreTrainedTokenizer):
    """Raw UTF-8 bytes: token i (i < 256) is the byte i, written as the character chr(i)."""

    vocab_files_names: dict = {}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def __init__(self, pad_token: Optional[str] = NUL, mask_token: Optional[str] = None, **kwargs):
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(pad_token=pad_token, mask_token=mask_token, **kwargs)

    @property
    def vocab_size(self) -> int:
        return 256

    def get_vocab(self) -> dict[str, int]:
        vocab = {chr(i): i for i in range(256)}
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return [chr(b) for b in text.encode("utf-8")]

    def _convert_token_to_id(self, token: str) -> int:
        return ord(token) if len(token) == 1 and ord(token) < 256 else self.unk_token_id

    def _convert_id_to_token(self, index: int) -> str:
        return chr(index)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        data = b"".join(bytes([ord(t)]) if len(t) == 1 and ord(t) < 256 else t.encode("utf-8") for t in tokens)
        return data.decode("utf-8", errors="replace")

    def save_vocabulary(self, save_directory: str, filename_prefix: Optional[str] = None) -> tuple[str, ...]:
        return ()                   # the vocabulary is the 256 bytes: nothing to write


class FlashgauBPETokenizer(_SavesCodeFiles, PreTrainedTokenizerFast):
    """Byte-level BPE (flashgau's BPETokenizer) over the HF `tokenizers` library, saved as tokenizer.json. Make one
    with to_hf_tokenizer(bpe), which names its pad token. (No __init__ of its own: transformers would then rebuild
    the backend from the vocabulary instead of loading tokenizer.json as it is.)"""

    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"

    def _add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Tokens already in the vocabulary (the pad token) only get a name: adding them to the backend would make
        it match their characters in text (the byte-level spelling of byte 0 is 'Ā', a real letter)."""
        vocab = self._tokenizer.get_vocab(with_added_tokens=False)
        new = [t for t in new_tokens if str(t) not in vocab]
        return super()._add_tokens(new, special_tokens=special_tokens) if new else 0


def _byte_level_char(byte: int) -> str:
    """The character byte-level BPE writes `byte` as (GPT-2's bytes_to_unicode)."""
    from ..data.tokenizers import _byte_decoder

    return next(c for c, b in _byte_decoder().items() if b == byte)


def to_hf_tokenizer(tok: Tokenizer, **kwargs):
    """The HF tokenizer that encodes as flashgau's `tok` does; kwargs go to its constructor (model_max_length,
    mask_token, ...). A flashgau tokenizer with a mask token (a masked-LM run's) gives one whose mask_token is the
    same text at the same id, so pipeline("fill-mask") works on the exported model."""
    if getattr(tok, "mask_token", None) is not None:
        kwargs.setdefault("mask_token", tok.mask_token)
    if isinstance(tok, ByteTokenizer):
        hf = FlashgauByteTokenizer(**kwargs)
    elif isinstance(tok, BPETokenizer):
        from tokenizers import Tokenizer as HFTokenizer

        kwargs = {"pad_token": _byte_level_char(0), "clean_up_tokenization_spaces": False, **kwargs}
        backend = HFTokenizer.from_str(tok.without_mask_token().to_dict()["tokenizer_json"])
        hf = FlashgauBPETokenizer(tokenizer_object=backend, **kwargs)
    else:
        raise TypeError(f"no Hugging Face tokenizer for {type(tok).__name__}")
    if tok.mask_token is not None and hf.mask_token_id != tok.mask_token_id:
        raise ValueError(f"the mask token {tok.mask_token!r} got id {hf.mask_token_id} in the Hugging Face tokenizer, "
                         f"not flashgau's {tok.mask_token_id}")
    return hf
