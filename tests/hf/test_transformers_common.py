"""flashgau tested as transformers tests its own models: a ModelTester (a tiny config and inputs) and test classes
built on transformers' common testers (ModelTesterMixin, GenerationTesterMixin, PipelineTesterMixin, ConfigTester),
for FlashgauForCausalLM with arch flash, flash-quad and transformer++, and for FlashgauForMaskedLM.

The common testers are transformers' own test files, which the wheel does not install. Point
FLASHGAU_TRANSFORMERS_TESTS at the `tests` folder of transformers' source at the installed version (a checkout of
its release tag); without it the folder .cache/transformers-tests/tests of this repository is tried. Where the files
are absent, or are only partly there (the source distribution on PyPI ships the top-level common files but not
tests/generation, tests/exporters or tests/utils, which those import), the module is skipped and says which file is
missing. docs/hugging_face.md has the commands.

What is declared, each the way transformers' own model tests declare it:
- FLASH and the masked LM on flash: has_attentions = False. Mixed chunk attention has no (T, T) weight matrix
  (relu^2 within chunks plus linear attention across them); output_attentions is refused with a ValueError that
  says so, and output_hidden_states works.
- test_retain_grad_hidden_states_attentions is skipped: the attention weights are computed beside the forward pass
  (which runs SDPA or the fused relu^2 op), so no gradient reaches them. Nothing else is skipped here.
"""

from __future__ import annotations

import importlib
import os
import sys
import unittest
from pathlib import Path

import pytest

from hf_helpers import NEEDS_HF

transformers = pytest.importorskip("transformers", reason=NEEDS_HF)
pytest.importorskip("parameterized", reason="transformers' common test files import parameterized: "
                    "pip install 'flashgau[test]'")

REPO = Path(__file__).resolve().parents[2]
NEEDED = ("test_modeling_common.py", "test_configuration_common.py", "test_pipeline_mixin.py",
          "generation/test_utils.py", "exporters/test_export.py", "utils/test_configuration_utils.py",
          "utils/tiny_model_summary.json")


def _find_tests() -> Path:
    """transformers' tests folder, or a module-level skip naming what is missing."""
    given = os.environ.get("FLASHGAU_TRANSFORMERS_TESTS")
    folder = Path(given) if given else REPO / ".cache" / "transformers-tests" / "tests"
    source = "FLASHGAU_TRANSFORMERS_TESTS" if given else "the default place; set FLASHGAU_TRANSFORMERS_TESTS"
    where = f"{folder} ({source})"
    if not folder.is_dir():
        pytest.skip(f"transformers' test files are not at {where}: point FLASHGAU_TRANSFORMERS_TESTS at the tests "
                    f"folder of transformers {transformers.__version__}'s source (docs/hugging_face.md)",
                    allow_module_level=True)
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if not (folder.parent / "src" / "transformers" / "__init__.py").is_file():
        missing.append("../src/transformers (the pipeline tester reads transformers' source beside its tests)")
    if missing:
        pytest.skip(f"transformers' test files at {where} lack {', '.join(missing)} (the PyPI source distribution "
                    f"ships only the top-level common files): use a checkout of transformers "
                    f"v{transformers.__version__}'s tests folder", allow_module_level=True)
    return folder


_TESTS = _find_tests()
sys.path.insert(0, str(_TESTS.parent))          # transformers' tests import each other as the package `tests`
for name in [m for m in sys.modules if m == "tests" or m.startswith("tests.")]:
    del sys.modules[name]                       # a `tests` imported before (this repository's) is not theirs

import torch  # noqa: E402

common = importlib.import_module("tests.test_modeling_common")
ModelTesterMixin, ids_tensor = common.ModelTesterMixin, common.ids_tensor
GenerationTesterMixin = importlib.import_module("tests.generation.test_utils").GenerationTesterMixin
ConfigTester = importlib.import_module("tests.test_configuration_common").ConfigTester
PipelineTesterMixin = importlib.import_module("tests.test_pipeline_mixin").PipelineTesterMixin

from flashgau.hf import FlashgauConfig, FlashgauForCausalLM, FlashgauForMaskedLM  # noqa: E402


class FlashgauModelTester:
    """A tiny flashgau config and its inputs, in the shape transformers' testers expect."""

    def __init__(self, parent, arch="flash", causal=True, batch_size=13, seq_length=7, vocab_size=99,
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=4, is_training=True):
        self.parent, self.arch, self.causal = parent, arch, causal
        self.batch_size, self.seq_length, self.vocab_size = batch_size, seq_length, vocab_size
        self.hidden_size, self.num_hidden_layers = hidden_size, num_hidden_layers
        # the heads of the attention weights: a GAU (FLASH-Quad) has gau_heads of them, 1 here
        self.num_attention_heads = num_attention_heads if arch.startswith("transformer") else 1
        self.is_training, self.use_labels, self.pad_token_id = is_training, True, 0

    def get_config(self, **overrides) -> FlashgauConfig:
        fields = dict(arch=self.arch, causal=self.causal, vocab_size=self.vocab_size, d_model=self.hidden_size,
                      n_layers=self.num_hidden_layers, n_heads=4, qk_dim=16, chunk_size=4, max_seq_len=64,
                      pad_token_id=self.pad_token_id, bos_token_id=1, eos_token_id=2)
        fields.update(overrides)
        return FlashgauConfig(**fields)

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size).clamp(min=3)
        # causal: each row's real tokens first, then padding; bidirectional: anywhere but a whole row
        lengths = torch.randint(1, self.seq_length + 1, (self.batch_size,))
        lengths[0] = self.seq_length
        attention_mask = (torch.arange(self.seq_length)[None, :] < lengths[:, None]).long()
        labels = ids_tensor([self.batch_size, self.seq_length], self.vocab_size) if self.use_labels else None
        return self.get_config(), input_ids, attention_mask, labels

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask, _ = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask}


class _FlashgauTests(ModelTesterMixin, PipelineTesterMixin):
    arch, causal = "flash", True
    has_attentions = True
    test_resize_embeddings = True

    def setUp(self):
        self.model_tester = FlashgauModelTester(self, arch=self.arch, causal=self.causal)
        # config.json holds flashgau's own names (d_model; hidden_size is its alias), as GPT-2's holds n_embd
        self.config_tester = ConfigTester(self, config_class=FlashgauConfig, d_model=32, arch=self.arch,
                                          causal=self.causal)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """transformers adds labels for the classes of its own Auto mappings; flashgau's are registered at import,
        so the labels are added here: the inputs themselves (the causal LM shifts them inside; for the masked LM
        every position is a target)."""
        inputs = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels and "labels" not in inputs:
            inputs["labels"] = inputs["input_ids"].clone()
        return inputs

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip("attentions are computed beside the forward pass from each block's input (the pass itself runs "
                   "SDPA or the fused relu^2 op, which give no weights), so they carry no gradient from the output "
                   "(that hidden states do is checked in tests/hf/test_modeling.py)")
    def test_retain_grad_hidden_states_attentions(self):
        pass


class FlashgauCausalFlashTest(_FlashgauTests, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (FlashgauForCausalLM,)
    pipeline_model_mapping = {"text-generation": FlashgauForCausalLM}
    arch = "flash"
    has_attentions = False          # mixed chunk attention has no (T, T) weight matrix (module docstring)


class FlashgauCausalFlashQuadTest(_FlashgauTests, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (FlashgauForCausalLM,)
    pipeline_model_mapping = {"text-generation": FlashgauForCausalLM}
    arch = "flash-quad"


class FlashgauCausalTransformerPPTest(_FlashgauTests, GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (FlashgauForCausalLM,)
    pipeline_model_mapping = {"text-generation": FlashgauForCausalLM}
    arch = "transformer++"


class FlashgauMaskedFlashTest(_FlashgauTests, unittest.TestCase):
    all_model_classes = (FlashgauForMaskedLM,)
    pipeline_model_mapping = {"fill-mask": FlashgauForMaskedLM}
    arch, causal = "flash", False
    has_attentions = False          # as for the causal FLASH model
