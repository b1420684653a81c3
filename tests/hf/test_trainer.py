"""HF's Trainer with HF's default language-model collator: labels=input_ids (the model shifts them), padding
ignored, and one optimizer step lowers the loss on the batch it saw."""

import pytest
import torch

from hf_helpers import NEEDS_HF

pytest.importorskip("transformers", reason=NEEDS_HF)
pytest.importorskip("accelerate", reason="accelerate (which transformers' Trainer needs) is not installed: "
                    "pip install 'flashgau[hf]'")

from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments  # noqa: E402

from flashgau import LanguageModel, ModelConfig  # noqa: E402
from flashgau.data.corpus import shakespeare_documents  # noqa: E402
from flashgau.data.tokenizers import ByteTokenizer  # noqa: E402
from flashgau.hf import FlashgauForCausalLM, to_hf_tokenizer  # noqa: E402


def test_one_trainer_step_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    model = FlashgauForCausalLM.from_language_model(
        LanguageModel(ModelConfig.preset("tiny", arch="flash", vocab_size=256)), pad_token_id=0)
    tokenizer = to_hf_tokenizer(ByteTokenizer())
    lines = [line for line in shakespeare_documents()[0].text.splitlines() if len(line) > 20][:8]
    dataset = [tokenizer(line[:48]) for line in lines]                  # rows of different lengths: padding
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    batch = collator(dataset)
    assert (batch["labels"] == -100).any() and (batch["attention_mask"] == 0).any()

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**batch).loss)

    before = loss()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=1, learning_rate=3e-3,
                             warmup_steps=0, lr_scheduler_type="constant", report_to=[], save_strategy="no",
                             use_cpu=True, logging_steps=1, disable_tqdm=True, dataloader_num_workers=0)
    result = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator).train()
    assert result.global_step == 1
    assert loss() < before
