"""flashgau tested as transformers tests its own models: a ModelTester (a tiny config and inputs) and test classes
built on transformers' common testers (ModelTesterMixin, GenerationTesterMixin, PipelineTesterMixin, ConfigTester),
for FlashgauForCausalLM with arch flash, flash-quad and transformer++, and for FlashgauForMaskedLM.

The common testers are transformers' own test files, which the wheel does not install. tools/transformers_tests.py
unpacks the source distribution of the installed version from the package registry into .cache/transformers-tests
(the folder tried by default; FLASHGAU_TRANSFORMERS_TESTS points at another, such as a checkout's tests folder).
Without test_modeling_common.py there the module is skipped and says how to get it. The source distribution ships
the top-level common files (ModelTesterMixin, ConfigTester, PipelineTesterMixin) but not tests/generation,
tests/exporters, tests/utils or tests/pipelines: what test_modeling_common.py imports from them stands in as an empty
mixin, and test_transformers_testers_not_in_this_folder skips naming each tester that did not run and where flashgau
checks the same (tests/hf/test_generation_contract.py, tests/hf/test_export.py). With a full checkout every tester
runs. docs/hugging_face.md has the commands.

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
import types
import unittest
from pathlib import Path

import pytest

from hf_helpers import NEEDS_HF

transformers = pytest.importorskip("transformers", reason=NEEDS_HF)
pytest.importorskip("parameterized", reason="transformers' common test files import parameterized: "
                    "pip install 'flashgau[test]'")

REPO = Path(__file__).resolve().parents[2]
NEEDED = ("test_modeling_common.py", "test_configuration_common.py")
# What a full checkout has and the PyPI source distribution does not: module -> (file, what stands in, why skipped)
PARTS = {
    "tests.generation.test_utils": ("generation/test_utils.py", "GenerationTesterMixin",
                                    "tests/hf/test_generation_contract.py checks what it checks, in flashgau's words"),
    "tests.exporters.test_export": ("exporters/test_export.py", "ExportTesterMixin",
                                    "tests/hf/test_export.py exports the causal LM with torch.export"),
    "tests.utils.test_configuration_utils": ("utils/test_configuration_utils.py", "config_common_kwargs", ""),
    "tests.pipelines": ("pipelines/__init__.py", "", ""),
}
ABSENT = ("{file} is not in transformers {version}'s PyPI source distribution (tools/transformers_tests.py fetches "
          "that), only in a checkout of its source: {why}")


def _find_tests() -> Path:
    """transformers' tests folder, or a module-level skip naming what is missing."""
    given = os.environ.get("FLASHGAU_TRANSFORMERS_TESTS")
    folder = Path(given) if given else REPO / ".cache" / "transformers-tests" / "tests"
    source = "FLASHGAU_TRANSFORMERS_TESTS" if given else "the default place; set FLASHGAU_TRANSFORMERS_TESTS"
    where = f"{folder} ({source})"
    missing = [name for name in NEEDED if not (folder / name).is_file()]
    if missing:
        pytest.skip(f"transformers' common test files ({', '.join(missing)}) are not at {where}: run "
                    f".venv/bin/python tools/transformers_tests.py (it unpacks transformers "
                    f"{transformers.__version__}'s source distribution there) or point FLASHGAU_TRANSFORMERS_TESTS at "
                    "a checkout's tests folder (docs/hugging_face.md)", allow_module_level=True)
    return folder


def _stand_in(module: str, name: str) -> None:
    """An importable `module` whose `name` is an empty mixin (or an empty dict for the kwargs of
    utils/test_configuration_utils.py): test_modeling_common.py imports it, the source distribution lacks it."""
    for depth in range(1, module.count(".") + 1):
        package = module.rsplit(".", depth)[0]
        if package not in sys.modules:
            try:
                importlib.import_module(package)
            except ImportError:
                sys.modules[package] = types.ModuleType(package)
    stub = types.ModuleType(module)
    if name:
        setattr(stub, name, {} if name == "config_common_kwargs" else type(name, (), {}))
    sys.modules[module] = stub


_TESTS = _find_tests()
sys.path.insert(0, str(_TESTS.parent))          # transformers' tests import each other as the package `tests`
for name in [m for m in sys.modules if m == "tests" or m.startswith("tests.")]:
    del sys.modules[name]                       # a `tests` imported before (this repository's) is not theirs
# the parts of a full checkout this folder lacks, each as a stand-in and a stated skip
ABSENT_PARTS = {module: ABSENT.format(file=file, version=transformers.__version__, why=why)
                for module, (file, _, why) in PARTS.items() if not (_TESTS / file).is_file()}
for module in ABSENT_PARTS:
    _stand_in(module, PARTS[module][1])
PIPELINES = "tests.pipelines" not in ABSENT_PARTS and (_TESTS / "utils" / "tiny_model_summary.json").is_file() \
    and (_TESTS.parent / "src" / "transformers" / "__init__.py").is_file()

import torch  # noqa: E402

common = importlib.import_module("tests.test_modeling_common")
ModelTesterMixin, ids_tensor = common.ModelTesterMixin, common.ids_tensor
GenerationTesterMixin = importlib.import_module("tests.generation.test_utils").GenerationTesterMixin
ConfigTester = importlib.import_module("tests.test_configuration_common").ConfigTester
PipelineTesterMixin = (importlib.import_module("tests.test_pipeline_mixin").PipelineTesterMixin if PIPELINES
                       else type("PipelineTesterMixin", (), {}))

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

    def test_transformers_testers_not_in_this_folder(self):
        """Which of transformers' testers did not run here, and why (a skip that names them, not a silence)."""
        absent = [why for module, why in ABSENT_PARTS.items() if PARTS[module][2]]
        if not PIPELINES:
            absent.append("PipelineTesterMixin needs tests/pipelines, tests/utils/tiny_model_summary.json and "
                          "src/transformers of a checkout: tests/hf/test_generation_contract.py runs the "
                          "text-generation and fill-mask pipelines batched and one by one")
        if absent:
            self.skipTest("; ".join(absent))

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
