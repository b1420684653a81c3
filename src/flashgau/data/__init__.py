"""Text in, token windows out: sources (sources.py: text, folders, JSON lines, Parquet, Arrow), corpora and the
split (corpus.py), tokenizers (tokenizers.py), preparation into token shards (prepare.py; on the fly into a cache:
cache.py) and the prepared format read through memory maps (prepared.py), windows (batching.py), and the data of one
run: a prepared dataset with the run's tokenizer (run_data.py). `flashgau.data.prepare.prepare` is the function
behind `flashgau prepare`.

Nothing here imports the model."""

from .batching import Batch, HeldoutWindows, TokenDocuments, WindowSampler, tokenize_documents
from .corpus import CorpusSplit, Document, load_split, read_documents, split_documents
from .prepared import PreparedData, open_prepared, verify_prepared
from .sources import open_source
from .tokenizers import (BPETokenizer, ByteTokenizer, load_tokenizer, load_tokenizer_json, make_tokenizer,
                         save_tokenizer, tokenizer_from_dict)

__all__ = ["Batch", "HeldoutWindows", "TokenDocuments", "WindowSampler", "tokenize_documents", "CorpusSplit",
           "Document", "load_split", "read_documents", "split_documents", "PreparedData", "open_prepared",
           "verify_prepared", "open_source", "BPETokenizer", "ByteTokenizer", "load_tokenizer", "load_tokenizer_json",
           "make_tokenizer", "save_tokenizer", "tokenizer_from_dict"]
