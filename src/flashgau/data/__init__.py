"""Text in, token windows out: corpora (corpus.py), tokenizers (tokenizers.py), windows (batching.py).

Nothing here imports the model."""

from .batching import Batch, HeldoutWindows, WindowSampler, tokenize_documents
from .corpus import CorpusSplit, Document, load_split, read_documents, split_documents
from .tokenizers import (BPETokenizer, ByteTokenizer, load_tokenizer, load_tokenizer_json, make_tokenizer,
                         save_tokenizer, tokenizer_from_dict)

__all__ = ["Batch", "HeldoutWindows", "WindowSampler", "tokenize_documents", "CorpusSplit", "Document",
           "load_split", "read_documents", "split_documents", "BPETokenizer", "ByteTokenizer", "load_tokenizer",
           "load_tokenizer_json", "make_tokenizer", "save_tokenizer", "tokenizer_from_dict"]
