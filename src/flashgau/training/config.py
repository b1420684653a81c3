"""TrainConfig: every setting of a training run, validated on construction.

It is stored in the checkpoint, so `--resume` continues with exactly the settings the run started with.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

from ..config import ARCHS, PRESET_NAMES, ModelConfig
from ..data.tokenizers import is_tokenizer_file
from ..errors import ConfigError
from ..runtime import PRECISIONS
from ..tasks import get_task
from .budget import COVERS
from .compiling import COMPILE_MODES

TOKENIZERS = ("bytes", "bpe")
# ModelConfig fields a run sets itself, so TrainConfig.model may not: why, for the error message.
NOT_MODEL_OPTIONS = {"arch": "give it as the run's arch (--arch)",
                     "vocab_size": "the tokenizer sets it (--tokenizer, --bpe-vocab-size)",
                     "causal": "the objective sets it (--objective lm: causal, mlm: bidirectional)"}
DEFAULT_TIME_BUDGET = 300.0  # seconds, used when neither steps nor time_budget is given
MAX_INT = 2 ** 31 - 1          # counts and sizes become tensor shapes and loop bounds
MAX_SEED = 2 ** 62             # seeds feed torch generators (64-bit), offset by small constants for side streams
MAX_SECONDS = 1e8              # about three years


@dataclass
class TrainConfig:
    """Settings of one training run.

    arch, preset:       the model (flashgau.ARCHS; a ModelConfig preset name: a size, or a size + "-paper" for the
                        paper's exact model at that size).
    objective:          what the run learns (flashgau.tasks): "lm", a causal model predicting every next token;
                        "mlm", a bidirectional model restoring 15% of the tokens corrupted BERT-style (the tokenizer
                        gains a mask token; no end-of-run sample: use `flashgau fill`); "qa", who speaks this line,
                        a causal model trained on the answer tokens and scored by greedy answers (tasks/qa.py,
                        docs/qa.md; usually with init_from a language model; no end-of-run sample).
    context:            T, tokens per training and held-out window.
    steps:              optimizer steps; or time_budget: seconds for the whole run (setup, training, held-out
                        evaluation, the sample and saving), turned into a step count by timing the first steps
                        (training/budget.py). Neither given: time_budget = 300.
    time_budget_covers: what time_budget counts: "run" (the whole run, as above) or "training" (the seconds of the
                        training steps only; evaluation, checkpoints and the sample come on top), which gives runs
                        whose evaluation costs differ the same training time (the quality benchmarks use it).
    batch_tokens:       tokens per optimizer step (rounded up to whole windows); reached with gradient
                        accumulation over micro-batches of at most micro_batch_tokens. Under torchrun it stays the
                        global batch: each of N processes takes 1/N of a step's windows (`split`).
    lr, min_lr_ratio:   peak learning rate; the cosine decays it to lr * min_lr_ratio at the last step.
    warmup_steps:       linear warm-up length (capped at a fifth of the run).
    weight_decay:       decoupled AdamW decay of weight matrices (never of norms, biases, scale/offset).
    beta1, beta2, grad_clip: AdamW betas and the global gradient-norm clip (0 = off).
    precision:          "auto" (bf16 autocast where the device is fast at it, else fp32; see flashgau.runtime),
                        "fp32", "bf16", or "fp16" (CUDA only, with a gradient scaler). Weights and optimizer
                        state stay fp32 in every precision.
    compile:            "off", "on" (train under torch.compile; held-out scoring of full batches too), or "auto" (on
                        where a compiler is present and the run is long enough to repay the compile time, decided
                        when the run starts: training/compiling.py). true / false (checkpoints of flashgau 0.1.0 written
                        before "auto" existed) read as on / off.
    checkpoint_activations: recompute each block's activations in the backward pass instead of keeping them
                        (LanguageModel.set_activation_checkpointing): a training step's activation memory falls to
                        about one block's plus a (B, T, d) input per block, for about one more forward pass of time;
                        the same loss and gradients. For long contexts; may change on resume.
    data:               None for the default corpus (Shakespeare), a text file, a folder, dataset files (JSON lines,
                        Parquet, Arrow), or a folder made by `flashgau prepare` (whose tokenizer and split then
                        replace tokenizer, bpe_vocab_size and heldout_fraction). Anything but a prepared folder is
                        prepared on the fly into the cache ($FLASHGAU_CACHE) once.
    heldout_fraction:   share of the corpus (by characters, whole documents) held out.
    tokenizer:          "bytes", "bpe" (trained on the training split, bpe_vocab_size ids), or the path of a
                        tokenizer.json (a byte-level BPE, e.g. GPT-2's).
    pack_documents:     training windows may cross document boundaries (documents back to back); held-out
                        windows never do.
    eval_every:         steps between held-out evaluations on eval_windows fixed windows (None: ~10 per run).
    save_every:         steps between checkpoints (None: ~5 per run); one is always written at the end.
    sample_tokens:      tokens generated after training (0: none), continuing sample_prompt (None: the first
                        line of the first held-out document); part of the run, so the time budget covers it.
    seed:               model initialisation and the order of training windows.
    out:                output folder (checkpoint.pt, metrics.jsonl, loss.png); None: runs/<arch>-<preset>.
    init_from:          None, or the run (its checkpoint file) whose weights this run starts from: weights only, a
                        new optimizer and schedule from step 0, any objective and data; the model (arch, preset,
                        model options) and tokenizer are the source's (training/init_from.py). Kept on resume.
    model:              ModelConfig fields set on top of the preset, e.g. {"qk_dim": 512, "chunk_size": 128}
                        (`flashgau train --model.qk_dim 512`, `--model-config FILE.json`): any field but those of
                        NOT_MODEL_OPTIONS; combiner_chunk_size may be "auto". Checked by building the run's
                        ModelConfig (ModelConfig.for_context) when the settings are made, before anything is written.
    """

    arch: str = "flash"
    preset: str = "small"
    objective: str = "lm"
    context: int = 512
    steps: Optional[int] = None
    time_budget: Optional[float] = None
    time_budget_covers: str = "run"
    batch_tokens: int = 4096
    micro_batch_tokens: int = 8192
    lr: float = 4e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    grad_clip: float = 1.0
    precision: str = "auto"
    compile: str = "off"
    checkpoint_activations: bool = False
    data: Optional[str] = None
    heldout_fraction: float = 0.1
    tokenizer: str = "bytes"
    bpe_vocab_size: int = 4096
    pack_documents: bool = False
    eval_every: Optional[int] = None
    eval_windows: int = 32
    save_every: Optional[int] = None
    sample_tokens: int = 0
    sample_prompt: Optional[str] = None
    seed: int = 0
    out: Optional[str] = None
    init_from: Optional[str] = None
    model: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        def positive_int(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            need(_is_int(value) and 1 <= value <= MAX_INT, f"{name} must be an integer in [1, {MAX_INT}], "
                 f"got {value!r}")

        def number(name: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
            value = getattr(self, name)
            ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                  and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi))
            need(ok, f"{name} must be a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}"
                     f"{')' if hi_open else ']'}, got {value!r}")

        need(self.arch in ARCHS, f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        need(self.preset in PRESET_NAMES, f"unknown preset {self.preset!r}; choose one of {', '.join(PRESET_NAMES)}")
        task = get_task(self.objective)
        for name in ("context", "batch_tokens", "micro_batch_tokens", "eval_windows", "bpe_vocab_size"):
            positive_int(name)
        for name in ("steps", "eval_every", "save_every"):
            positive_int(name, optional=True)
        need(_is_int(self.warmup_steps) and 0 <= self.warmup_steps <= MAX_INT,
             f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        need(_is_int(self.sample_tokens) and 0 <= self.sample_tokens <= MAX_INT,
             f"sample_tokens must be an integer >= 0, got {self.sample_tokens!r}")
        task.check_settings(sample_tokens=self.sample_tokens)
        need(self.sample_prompt is None or isinstance(self.sample_prompt, str),
             f"sample_prompt must be text or None, got {type(self.sample_prompt).__name__}")
        need(self.init_from is None or (isinstance(self.init_from, str) and self.init_from != ""),
             f"init_from must be the path of a run or None, got {self.init_from!r}")
        need(_is_int(self.seed) and 0 <= self.seed < MAX_SEED, f"seed must be an integer in [0, 2**62), "
             f"got {self.seed!r}")
        need(not (self.steps is not None and self.time_budget is not None),
             "give either steps or time_budget, not both")
        if self.time_budget is not None:
            number("time_budget", 0.0, MAX_SECONDS, lo_open=True)
        need(self.time_budget_covers in COVERS, f"time_budget_covers must be one of {', '.join(COVERS)}, got "
                                                f"{self.time_budget_covers!r}")
        number("lr", 0.0, 1e3, lo_open=True)
        number("min_lr_ratio", 0.0, 1.0)
        number("weight_decay", 0.0, 1e3)
        number("beta1", 0.0, 1.0, hi_open=True)
        number("beta2", 0.0, 1.0, hi_open=True)
        number("grad_clip", 0.0, 1e9)
        number("heldout_fraction", 0.0, 1.0, lo_open=True, hi_open=True)
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got "
                                           f"{self.precision!r}")
        need(self.tokenizer in TOKENIZERS or is_tokenizer_file(self.tokenizer),
             f"tokenizer must be one of {', '.join(TOKENIZERS)} or the path of a tokenizer.json, got "
             f"{self.tokenizer!r}")
        if isinstance(self.compile, bool):          # checkpoints of flashgau 0.1.0 written before "auto" existed
            self.compile = "on" if self.compile else "off"
        need(self.compile in COMPILE_MODES, f"compile must be one of {', '.join(COMPILE_MODES)} (or true / false), "
                                            f"got {self.compile!r}")
        for name in ("pack_documents", "checkpoint_activations"):
            need(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")
        need(self.tokenizer != "bpe" or self.bpe_vocab_size > 256,
             f"bpe_vocab_size must be > 256 (the byte alphabet), got {self.bpe_vocab_size}")
        if self.steps is None and self.time_budget is None:
            self.time_budget = DEFAULT_TIME_BUDGET
        self.model_config(256)                                             # the model options fit together

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The run's ModelConfig over `vocab_size` ids (causal or not as the objective says; the preset, the context
        and the model options); a ConfigError naming the option that does not fit."""
        if not isinstance(self.model, dict) or not all(isinstance(k, str) for k in self.model):
            raise ConfigError(f"model must be a dict of ModelConfig fields, got {self.model!r}")
        for name in sorted(set(self.model) & set(NOT_MODEL_OPTIONS)):
            raise ConfigError(f"{name} is not a model option of a run: {NOT_MODEL_OPTIONS[name]}")
        unknown = sorted(set(self.model) - set(ModelConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown model option(s): {', '.join(unknown)} (see flashgau train --help, "
                              "docs/model_options.md)")
        try:
            return ModelConfig.for_context(self.preset, arch=self.arch, context=self.context, vocab_size=vocab_size,
                                           causal=get_task(self.objective).causal, **self.model)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    @property
    def out_dir(self) -> str:
        return self.out if self.out is not None else f"runs/{self.arch}-{self.preset}"

    @property
    def windows_per_step(self) -> int:
        return -(-self.batch_tokens // self.context)

    @property
    def micro_batch_size(self) -> int:
        """Windows per forward pass: the largest divisor of windows_per_step within micro_batch_tokens."""
        return self.split(1)[0]

    @property
    def accumulation_steps(self) -> int:
        return self.split(1)[1]

    def split(self, processes: int) -> tuple[int, int]:
        """(windows per forward pass, forward passes per step) of each of `processes` processes sharing a step's
        windows_per_step equally (data parallel: batch_tokens stays the global batch): the largest divisor of a
        process's share within micro_batch_tokens. A ConfigError when the step does not split evenly."""
        windows = self.windows_per_step
        if windows % processes:
            raise ConfigError(f"a step's {windows} windows (batch_tokens {self.batch_tokens}, context {self.context}) "
                              f"do not split evenly over {processes} processes; use a number of processes that "
                              f"divides {windows}, or (for a new run) batch_tokens a multiple of {processes} x "
                              f"{self.context}")
        share = windows // processes
        cap = max(1, self.micro_batch_tokens // self.context)
        micro = max(d for d in range(1, min(cap, share) + 1) if share % d == 0)
        return micro, share // micro

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
