"""The Hugging Face face of flashgau: the same LanguageModel as a `transformers` model (an optional extra:
`pip install 'flashgau[hf]'`).

Importing this module registers model_type "flashgau" with AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM
and AutoTokenizer, so a folder written by `save_pretrained` or `flashgau export` loads with the Auto classes and
`pipeline(...)`:

    import flashgau.hf  # registers the Auto classes
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    model = AutoModelForCausalLM.from_pretrained("exported/")
    generator = pipeline("text-generation", model="exported/")

configuration.py  FlashgauConfig (every ModelConfig field)
modeling.py       FlashgauForCausalLM (generate with flashgau's decoding state), FlashgauForMaskedLM
cache.py          FlashgauCache: the DecodeState as a transformers Cache
tokenization.py   FlashgauByteTokenizer, FlashgauBPETokenizer, to_hf_tokenizer
export.py         export_run: a training run -> a folder from_pretrained reads; add_remote_code
remote_code/      the code files such a folder carries, so transformers loads it by path alone (trust_remote_code)
"""

try:
    import transformers  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised by the test that hides transformers
    raise ImportError("flashgau.hf needs Hugging Face transformers: pip install 'flashgau[hf]'") from err

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from .cache import FlashgauCache
from .configuration import FlashgauConfig
from .export import add_remote_code, export_run, save_pretrained_folder
from .modeling import FlashgauForCausalLM, FlashgauForMaskedLM, FlashgauPreTrainedModel
from .tokenization import FlashgauBPETokenizer, FlashgauByteTokenizer, to_hf_tokenizer

__all__ = ["FlashgauConfig", "FlashgauForCausalLM", "FlashgauForMaskedLM", "FlashgauPreTrainedModel",
           "FlashgauCache", "FlashgauByteTokenizer", "FlashgauBPETokenizer", "to_hf_tokenizer", "export_run",
           "save_pretrained_folder", "add_remote_code"]

AutoConfig.register(FlashgauConfig.model_type, FlashgauConfig, exist_ok=True)
AutoModelForCausalLM.register(FlashgauConfig, FlashgauForCausalLM, exist_ok=True)
AutoModelForMaskedLM.register(FlashgauConfig, FlashgauForMaskedLM, exist_ok=True)
# both tokenizer classes are found by the name tokenizer_config.json records; the BPE one is the default
AutoTokenizer.register(FlashgauConfig, tokenizer_class=FlashgauByteTokenizer, exist_ok=True)
AutoTokenizer.register(FlashgauConfig, tokenizer_class=FlashgauBPETokenizer, exist_ok=True)
