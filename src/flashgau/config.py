"""Model configuration: one validated dataclass and named presets with matched parameter counts.

Sizing convention of the paper: one Transformer layer (attention + MLP, about 12 d^2 parameters) stands for two
GAU layers (about 6 d^2 + d s each), so the GAU archs ("flash", "flash-quad") stack twice as many layers as the
Transformer archs at the same preset.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

from .errors import ConfigError

# Every arch the package knows, in the order tables list them. layers/blocks.py maps each to its block.
ARCHS: tuple[str, ...] = ("transformer+", "transformer++", "flash-quad", "flash", "performer", "combiner",
                          "mc-transformer++")

# GAU-based archs stack two layers for each Transformer layer of a preset.
GAU_ARCHS: frozenset[str] = frozenset({"flash", "flash-quad"})

NORMS = ("layernorm", "scalenorm")
REL_POS = ("auto", "toeplitz", "rope", "none")
NORMALIZERS = ("fixed", "paper")
ATTENTION_PRECISIONS = ("auto", "fp32")
INITS = ("normal", "scaled", "fan_in")
LINEAR_NORMALIZERS = ("average", "sum")
COMBINER_POOLINGS = ("rotated", "unrotated")
GAU_ATTENTIONS = ("relu2", "softmax")
MIXED_CHUNK_PARTS = ("both", "local", "global")
# The fields that take one of a few names, and the names.
CHOICES: dict[str, tuple[str, ...]] = dict(
    arch=ARCHS, norm=NORMS, rel_pos=REL_POS, normalizer=NORMALIZERS, attention_precision=ATTENTION_PRECISIONS,
    init=INITS, linear_normalizer=LINEAR_NORMALIZERS, combiner_pooling=COMBINER_POOLINGS,
    gau_attention=GAU_ATTENTIONS, mixed_chunk_parts=MIXED_CHUNK_PARTS)
# Fields that also take "auto" where the training context is known (ModelConfig.for_context resolves it).
CONTEXT_AUTO = ("combiner_chunk_size",)

# Per preset: width, Transformer-layer count (GAU archs get twice as many), and the shape fields.
PRESETS: dict[str, dict[str, Any]] = {
    # tiny trains at short contexts: FLASH-Quad's n (its normaliser and Toeplitz table) is 128 there, not 512
    "tiny": dict(d_model=64, transformer_layers=1, qk_dim=32, n_heads=4, chunk_size=16, max_seq_len=2048,
                 quad_norm_len=128),
    "small": dict(d_model=256, transformer_layers=4, qk_dim=128, n_heads=4, chunk_size=256),
    "base": dict(d_model=768, transformer_layers=12, qk_dim=128, n_heads=12, chunk_size=256),
}

# The paper's model (Hua et al. 2022; shared/reference/flash-paper.md), pinned field by field: a "<size>-paper" preset
# is its size preset with these values, so changing a ModelConfig default never changes it. Every field that is not
# a size (SIZE_FIELDS) is pinned; a new field must be added here (a test checks it). docs/model_options.md.
PAPER: dict[str, Any] = dict(
    expansion=2,                  # e = 2d
    norm="layernorm",             # Code 1's default (ScaleNorm is its alternative)
    rel_pos="auto",               # Toeplitz bias for n <= 512, RoPE-factorised above
    normalizer="fixed",           # /n, n = the training length (for_context sets quad_norm_len): Code 1 at that length
    linear_normalizer="average",  # Code 8's row-normalised chunk mask: the average of the visible summaries
    scaled_sinusoid=True,         # the absolute sinusoid, scale initialised to 1/sqrt(d)
    rope_fraction=1.0,            # RoPE over all s dims of q and k
    token_shift=0.0,              # not in the paper
    init="normal", init_std=0.02,  # N(0, 0.02) everywhere
    embed_init_std=None,          # the embedding too (init_std)
    dropout=0.0,
    tie_embeddings=True,          # not stated by the paper; flashgau's choice
    attention_precision="auto",   # not stated (TPU runs)
    # the baselines, as the paper's references would run them (settings not confirmed by the paper's text)
    performer_chunk_size=None, performer_epsilon=1e-4, feature_redraw_interval=1000,
    combiner_chunk_size=None, combiner_pooling="rotated",
    # the paper's GAU: one head, relu^2, both parts of mixed chunk attention (its §4 ablates each)
    gau_heads=1, gau_attention="relu2", mixed_chunk_parts="both",
    first_to_all=False,           # the paper's FLASH; one TriviaQA row adds "first-to-all" (flashgau's reading: below)
)
# The paper's s and C, pinned for the presets wide enough for them (tiny keeps its test-sized s and C).
PAPER_SHAPES: dict[str, Any] = dict(qk_dim=128, chunk_size=256)
# Fields that size a model (set by a size preset, by the run or by the tokenizer), not pinned by PAPER.
SIZE_FIELDS = ("arch", "vocab_size", "d_model", "n_layers", "causal", "max_seq_len", "chunk_size", "qk_dim",
               "n_heads", "ffn_dim", "quad_norm_len", "random_features")
PAPER_SUFFIX = "-paper"
# Fields whose default changed (the ablations' measurements, docs/model_options.md), with the value they had before: a
# saved config without the field (written before it existed) was made with that value.
DEFAULTS_BEFORE: dict[str, Any] = dict(token_shift=0.0, init="normal", combiner_pooling="rotated",
                                       tie_embeddings=True)
# token_shift=None resolves per arch to the value measured best for it (`flashgau bench ablations --groups
# defaults token_shift_archs`, small preset, 512, AMD EPYC AVX2; docs/model_options.md has the figures): FLASH 0.10
# nats lower with it after 60 steps (two seeds); after 100 steps without it Transformer++ is 0.07-0.14 nats lower
# (two seeds), Performer 0.28, Combiner 0.25, Transformer+ the same (0.01), MC-TFM++ either way by seed (+0.32 /
# -0.20: off, as Transformer++). FLASH-Quad shares FLASH's GAU layer (not measured apart).
TOKEN_SHIFT_DEFAULTS: dict[str, float] = {"flash": 0.5, "flash-quad": 0.5, "mc-transformer++": 0.0,
                                          "transformer+": 0.0, "transformer++": 0.0, "performer": 0.0,
                                          "combiner": 0.0}
PRESET_NAMES: tuple[str, ...] = (*PRESETS, *(name + PAPER_SUFFIX for name in PRESETS))


@dataclass
class ModelConfig:
    """Everything that defines a model's shape; validated on construction (a bad field raises ConfigError).

    arch:            one of ARCHS.
    vocab_size:      V, number of token ids.
    d_model:         d, residual width.
    n_layers:        number of blocks (GAU layers for GAU archs, Transformer layers otherwise).
    causal:          True for language modelling, False for a bidirectional encoder (masked LM).
    max_seq_len:     longest sequence the model accepts (forward and decoding positions).
    chunk_size:      C, chunk length of mixed chunk attention ("flash").
    qk_dim:          s, width of the shared query/key base z in a GAU.
    expansion:       e = expansion * d_model, width of u and v in a GAU.
    n_heads:         heads of multi-head attention (Transformer archs).
    ffn_dim:         hidden width of the MLP / GLU; None picks 4d (MLP) or 8d/3 rounded to 8 (GLU).
    norm:            "layernorm" or "scalenorm" (x * rsqrt(mean(x^2) + eps) * g, one scalar g); pre-norm.
    rel_pos:         relative position bias of GAU attention: "toeplitz" (learned, one weight per offset
                     up to the trained length n, 2n - 1 weights with n <= 512; farther offsets share the
                     last), "rope" (the paper's RoPE-factorised bias for long n), "none",
                     or "auto" (the paper's rule, n <= 512: toeplitz, n > 512: rope, with n the length the
                     quadratic attention is trained on: chunk_size for flash, quad_norm_len for flash-quad).
    normalizer:      how FLASH-Quad's attention scores are normalised; see docs/normalisers.md.
                     "fixed": divide q.k by the constant quad_norm_len, so a causal output depends only on
                     tokens <= t (and decoding has a KV cache). "paper": divide by each row's real length
                     (Code 1 divides by the padded length T; the two agree on unpadded rows); a causal model's
                     past outputs then change as the sequence grows, so it has no decoding state. FLASH (mixed
                     chunk) ignores it: /C inside chunks, the linear part as linear_normalizer says.
    quad_norm_len:   n of FLASH-Quad's "fixed" normaliser: the training length, as the paper divides by the
                     length it trains at (1K-8K in its experiments); ModelConfig.for_context (what flashgau
                     train builds with) sets it to the run's context. Also the n of rel_pos="auto" and of the
                     Toeplitz table for flash-quad.
    scaled_sinusoid: add the paper's absolute sinusoid (one learnable scale, init 1/sqrt(d)) to embeddings.
    tie_embeddings:  share the input embedding and the output head (the paper's presets; 0.2.0's default). False
                     (the default): an untied output Linear, which with embed_init_std's N(0, 1) embedding learns
                     faster in every plain training loop measured (docs/model_options.md, "Learning speed").
    random_features: m, random features per layer of FAVOR+ ("performer"); a fixed buffer drawn at init.
    feature_redraw_interval: "performer" redraws its random features every this many training-mode forward
                     passes (0: never); never in eval mode or while decoding. See docs/baselines.md.
    dropout:         dropout on block outputs (the paper uses 0).
    init_std:        std of the normal initialisation of weights (see init).
    attention_precision: "auto": GAU attention (FLASH, FLASH-Quad) runs in the dtype around it (bf16 under
                     autocast: the relu^2 scores, weights and A.v; the chunk summaries and counts stay fp32).
                     "fp32": those scores, weights and products run in fp32 under autocast too (the
                     projections stay in the autocast dtype). Not in the paper (TPU runs, precision unstated).
    init:            initialisation of the Linear weights (the GAU scale gamma and the position tables are always
                     N(0, init_std), the embedding N(0, embed_init_std), biases and offsets 0). "normal": N(0,
                     init_std) for every weight (the paper's). "scaled": as "normal", but the output projection of
                     every residual branch (GAU to_out, attention out, MLP/GLU output) gets init_std / sqrt(R), R
                     the number of residual branches (n_layers for GAU archs, 2 n_layers for Transformer archs):
                     GPT-2's scaling. "fan_in": N(0, 1/fan_in) for every Linear weight (LeCun normal).
    embed_init_std:  std of the token embedding's normal init; None (the default): 1.0 with an untied head
                     (PyTorch's nn.Embedding default and lucidrains'), init_std with tie_embeddings (the same table
                     is then the output head, and a large std would mean large initial logits); embedding_std.
    rope_fraction:   share of each query/key width that RoPE rotates (GAU's s, a head's width for attention
                     archs), rounded to an even count; the first channels rotate, the rest pass unrotated. 1.0 is
                     the paper (all s dims); lucidrains' FLASH rotates 32 of 128 (0.25); 0 turns RoPE off.
    linear_normalizer: what FLASH's linear (global) part divides the visible chunk summaries by (flash and
                     mc-transformer++): "average": the number of real tokens they hold (the paper's Code 8,
                     (g - 1) C for causal chunk g); "sum": C, i.e. the per-chunk summaries /C summed (lucidrains,
                     OpenNLPLab). Both are prefix-consistent and decode exactly; see docs/normalisers.md.
    token_shift:     share of the d channels of every block's normalised input taken from the neighbouring
                     token (RWKV-style, lucidrains' shift_tokens: 0.5; not in the paper; 0: off); None (the default):
                     the arch's measured best, TOKEN_SHIFT_DEFAULTS (0.5 for the GAU archs, off for the Transformer
                     baselines, which it slows or does not help: docs/model_options.md). Causal, from the
                     previous token; bidirectional, half of them from the previous and half from the next. GAU
                     blocks shift before the uvz projection, Transformer blocks before attention and before the
                     feed-forward. Padding never shifts into a real token; decoding carries the previous token's
                     channels (layers/token_shift.py).
    performer_chunk_size: chunk length of Performer's causal pass (its maths does not depend on it: only speed
                     and memory); None: chunk_size (FLASH's C). The op's own default is 64.
    performer_epsilon: the feature floor of the Performer reference code (features exp(. - shift) + eps; the
                     reference adds 1e-4); 0: none. See docs/baselines.md.
    combiner_chunk_size: Combiner's chunk length; None: chunk_size (FLASH's C). "auto" (given to
                     ModelConfig.for_context or flashgau train, which know the context T): the power of two
                     2^ceil(log2(T)/2), about sqrt(T), the cost optimum of Combiner-Fixed (its authors' "sqrt").
    combiner_pooling: what Combiner's chunk summaries are max-pooled from and read with: "unrotated" (q and k
                     before RoPE: the summaries carry content only, as in the authors' model, which has no RoPE;
                     the direct part keeps RoPE; measured better, docs/baselines.md) or "rotated" (the RoPE-rotated
                     q and k, as the direct part; the -paper presets', as every baseline there rotates).
    gau_heads:       h, heads of GAU attention (flash, flash-quad): each head attends with its own s/h channels of
                     every query/key map and its own e/h channels of v, at the cost of one head (the same
                     parameters and multiply-adds; the paper's ablation "one head vs several", 1 is the paper's).
                     qk_dim must split into h even widths and e into h widths.
    gau_attention:   the kernel of GAU attention (flash's local part, flash-quad): "relu2" (the paper's:
                     relu(q.k / n + b)^2) or "softmax" (softmax(q.k / sqrt(s/h) + b) over the visible keys; the
                     paper's relu^2-vs-softmax ablation; FLASH-Quad's normalizer does not apply to it).
    mixed_chunk_parts: which parts of FLASH's mixed chunk attention run (flash only): "both" (the paper's),
                     "local" (the quadratic part inside chunks only) or "global" (the linear part across chunks
                     only: a causal token then sees nothing of its own chunk, as the paper's causal global part
                     is exclusive). The unused query/key maps (and, for "global", the relative bias) are not built.
    first_to_all:    flashgau's reading of the paper's "first-to-all" (flash only; an interpretation, see
                     docs/model_options.md): the queries of every chunk after the first also attend exactly to the
                     first chunk's C tokens (relu(quad_q.quad_k / C)^2, no relative bias), where a QA prompt's
                     question sits, and the first chunk leaves their global (linear) part; the first chunk's own
                     queries are unchanged. Linear cost (one more C x C block per chunk), causal and bidirectional;
                     decoding keeps the first chunk's keys and values (fixed size). Needs gau_attention "relu2" and
                     the local part (mixed_chunk_parts "both" or "local"); flash-quad already attends to every token.
    """

    arch: str = "flash"
    vocab_size: int = 256
    d_model: int = 256
    n_layers: int = 8
    causal: bool = True
    max_seq_len: int = 16384
    chunk_size: int = 256
    qk_dim: int = 128
    expansion: int = 2
    n_heads: int = 4
    ffn_dim: Optional[int] = None
    norm: str = "layernorm"
    rel_pos: str = "auto"
    normalizer: str = "fixed"
    quad_norm_len: int = 512
    scaled_sinusoid: bool = True
    tie_embeddings: bool = False
    dropout: float = 0.0
    init_std: float = 0.02
    embed_init_std: Optional[float] = None
    random_features: int = 256
    feature_redraw_interval: int = 1000
    attention_precision: str = "auto"
    init: str = "fan_in"
    rope_fraction: float = 1.0
    linear_normalizer: str = "average"
    token_shift: Optional[float] = None
    performer_chunk_size: Optional[int] = None
    performer_epsilon: float = 0.0
    combiner_chunk_size: Optional[int] = None
    combiner_pooling: str = "unrotated"
    gau_heads: int = 1
    gau_attention: str = "relu2"
    mixed_chunk_parts: str = "both"
    first_to_all: bool = False

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(f"invalid ModelConfig: {msg}")

        need(self.arch in ARCHS, f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.token_shift is None:
            self.token_shift = TOKEN_SHIFT_DEFAULTS[self.arch]
        for name, choices in CHOICES.items():
            need(getattr(self, name) in choices, f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        for name in ("vocab_size", "d_model", "n_layers", "max_seq_len", "qk_dim", "expansion", "n_heads",
                     "quad_norm_len", "chunk_size", "random_features", "gau_heads"):
            value = getattr(self, name)
            need(_is_int(value) and value >= 1, f"{name} must be a positive integer, got {value!r}")
        for name in ("causal", "scaled_sinusoid", "tie_embeddings", "first_to_all"):
            need(isinstance(getattr(self, name), bool), f"{name} must be True or False, got {getattr(self, name)!r}")
        need(self.d_model % self.n_heads == 0,
             f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); change one of them")
        need(self.qk_dim % 2 == 0, f"qk_dim must be even for RoPE, got {self.qk_dim}")
        need(self.qk_dim % self.gau_heads == 0 and (self.qk_dim // self.gau_heads) % 2 == 0,
             f"qk_dim ({self.qk_dim}) must split into gau_heads ({self.gau_heads}) heads of even width (RoPE); "
             "change one of them")
        need(self.expanded_dim % self.gau_heads == 0,
             f"e = expansion * d_model ({self.expanded_dim}) must be divisible by gau_heads ({self.gau_heads})")
        need((self.d_model // self.n_heads) % 2 == 0,
             f"head width d_model/n_heads = {self.d_model // self.n_heads} must be even for RoPE")
        need(self.ffn_dim is None or (_is_int(self.ffn_dim) and self.ffn_dim >= 1),
             f"ffn_dim must be None or a positive integer, got {self.ffn_dim!r}")
        need(_is_number(self.dropout) and 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")
        need(_is_number(self.init_std) and self.init_std > 0, f"init_std must be > 0, got {self.init_std!r}")
        need(self.embed_init_std is None or (_is_number(self.embed_init_std) and self.embed_init_std > 0),
             f"embed_init_std must be None (init_std) or > 0, got {self.embed_init_std!r}")
        need(_is_int(self.feature_redraw_interval) and self.feature_redraw_interval >= 0,
             f"feature_redraw_interval must be an integer >= 0 (0: never), got {self.feature_redraw_interval!r}")
        need(_is_number(self.rope_fraction) and 0.0 <= self.rope_fraction <= 1.0,
             f"rope_fraction must be a number in [0, 1] (1 = all dims, 0 = no RoPE), got {self.rope_fraction!r}")
        need(_is_number(self.token_shift) and 0.0 <= self.token_shift <= 1.0,
             f"token_shift must be a number in [0, 1] (the share of channels shifted; 0 = off), got "
             f"{self.token_shift!r}")
        for name in ("performer_chunk_size", "combiner_chunk_size"):
            value = getattr(self, name)
            need(not (value == "auto" and name in CONTEXT_AUTO),
                 f"{name}='auto' is decided from the training context: build the config with "
                 "ModelConfig.for_context(...) (flashgau train and the benchmarks do), or give a number")
            need(value is None or (_is_int(value) and value >= 1),
                 f"{name} must be None (chunk_size) or a positive integer, got {value!r}")
        need(_is_number(self.performer_epsilon) and 0.0 <= self.performer_epsilon < 1.0,
             f"performer_epsilon must be a number in [0, 1) (the reference uses 1e-4), got {self.performer_epsilon!r}")
        if self.first_to_all:
            need(self.arch != "flash-quad", "first_to_all is for arch 'flash': flash-quad already attends to every "
                 "token; set first_to_all=False")
            need(self.arch == "flash", f"first_to_all is for arch 'flash' (mixed chunk attention), not "
                 f"{self.arch!r}; set first_to_all=False")
            need(self.gau_attention == "relu2", "first_to_all needs gau_attention='relu2' (the softmax local part "
                 "has no first-chunk keys); change one of them")
            need(self.mixed_chunk_parts != "global", "first_to_all adds the first chunk to the local part, which "
                 "mixed_chunk_parts='global' does not run; change one of them")

    @property
    def expanded_dim(self) -> int:
        """e, the width of u and v in a GAU."""
        return self.expansion * self.d_model

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP (Transformer+): ffn_dim, or 4d."""
        return self.ffn_dim or 4 * self.d_model

    @property
    def glu_hidden(self) -> int:
        """Hidden width of the GLU (Transformer++ and the baselines built on it): ffn_dim, or 8d/3 rounded to a
        multiple of 8, so that the GLU has the MLP's 8d^2 parameters."""
        return self.ffn_dim or max(8, int(round(8 * self.d_model / 3 / 8)) * 8)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def rope_dims(self, width: int) -> int:
        """How many of `width` query/key channels RoPE rotates: rope_fraction of them, rounded to an even count."""
        return 2 * int(round(self.rope_fraction * width / 2))

    @property
    def performer_chunk(self) -> int:
        """Chunk length of Performer's causal pass."""
        return self.performer_chunk_size or self.chunk_size

    @property
    def combiner_chunk(self) -> int:
        """Combiner's chunk length."""
        return self.combiner_chunk_size or self.chunk_size

    @property
    def residual_branches(self) -> int:
        """R, the residual branches of the stack: one per GAU layer, two (attention, feed-forward) per Transformer
        layer."""
        return self.n_layers if self.arch in GAU_ARCHS else 2 * self.n_layers

    @property
    def attention_span(self) -> int:
        """n of the paper's relative-bias rule: the length a GAU's quadratic attention is trained on (the chunk
        for flash, the training length quad_norm_len for flash-quad)."""
        if self.arch == "flash":
            return min(self.chunk_size, self.max_seq_len)
        return self.quad_norm_len

    def resolved_rel_pos(self) -> str:
        """rel_pos with "auto" decided by the paper's rule: toeplitz when attention_span <= 512, else rope."""
        if self.rel_pos != "auto":
            return self.rel_pos
        return "toeplitz" if self.attention_span <= 512 else "rope"

    @property
    def embedding_std(self) -> float:
        """The std the token embedding is drawn with: embed_init_std, or for None 1.0 untied and init_std tied."""
        if self.embed_init_std is not None:
            return self.embed_init_std
        return self.init_std if self.tie_embeddings else 1.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """The config `to_dict` wrote, by this or an earlier flashgau: a dict from before rel_pos="auto" was tied
        to the training length (no "attention_precision" key) keeps the bias its model was built with, and a field
        whose default has changed since (DEFAULTS_BEFORE) keeps the old value when the dict lacks it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        data = {**DEFAULTS_BEFORE, **data}
        if ("attention_precision" not in data and data.get("arch") == "flash-quad"
                and data.get("rel_pos", "auto") == "auto"):
            data["rel_pos"] = "toeplitz" if data.get("max_seq_len", 16384) <= 512 else "rope"
        return cls(**data)

    @classmethod
    def preset(cls, name: str, *, arch: str = "flash", **overrides: Any) -> "ModelConfig":
        """A named size ("tiny", "small", "base") for `arch`, or with the suffix "-paper" ("small-paper") the paper's
        model at that size (PAPER); any field may be overridden."""
        if name not in PRESET_NAMES:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
        if arch not in ARCHS:
            raise ConfigError(f"invalid ModelConfig: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        size = name[:-len(PAPER_SUFFIX)] if name.endswith(PAPER_SUFFIX) else name
        fields = dict(PRESETS[size])
        if size != name:
            fields.update(PAPER)
            if size != "tiny":
                fields.update(PAPER_SHAPES)
        layers = fields.pop("transformer_layers")
        fields["n_layers"] = 2 * layers if arch in GAU_ARCHS else layers
        fields.update(overrides)
        return cls(arch=arch, **fields)

    @classmethod
    def paper(cls, size: str = "small", *, arch: str = "flash", **overrides: Any) -> "ModelConfig":
        """The paper's model at `size`: ModelConfig.preset(size + "-paper", ...). For a training run build it with
        ModelConfig.for_context(size + "-paper", arch=..., context=T), which also sets the paper's n = T."""
        return cls.preset(size + PAPER_SUFFIX, arch=arch, **overrides)

    @classmethod
    def for_context(cls, preset: str, *, arch: str, context: int, vocab_size: int = 256, causal: bool = True,
                    **overrides: Any) -> "ModelConfig":
        """The model of a run that trains `arch` at size `preset` on windows of `context` tokens; `flashgau train`
        (TrainConfig.model_config) builds its models here, and the benchmarks are to, so that one (preset, arch,
        context) is one model everywhere. On top of the preset and `overrides`, the choices the paper ties to its
        training length n = context:

        - FLASH-Quad: quad_norm_len = context unless given, so the fixed normaliser divides by the training length
          as the paper does, and rel_pos="auto" picks the paper's bias for that n (Toeplitz up to 512, RoPE-
          factorised above);
        - combiner_chunk_size="auto": combiner_auto_chunk(context), about sqrt(context).

        context must not exceed max_seq_len (the preset's unless overridden)."""
        if not (isinstance(context, int) and not isinstance(context, bool) and context >= 1):
            raise ConfigError(f"context must be a positive integer, got {context!r}")
        fields = dict(overrides)
        if arch == "flash-quad":
            fields.setdefault("quad_norm_len", context)
        if fields.get("combiner_chunk_size") == "auto":
            fields["combiner_chunk_size"] = combiner_auto_chunk(context)
        cfg = cls.preset(preset, arch=arch, vocab_size=vocab_size, causal=causal, **fields)
        if context > cfg.max_seq_len:
            whose = "" if "max_seq_len" in overrides else f"the {preset} preset's "
            raise ConfigError(f"context {context} exceeds {whose}max_seq_len {cfg.max_seq_len}; give a shorter "
                              "context or a larger max_seq_len")
        return cfg


def field_docs() -> dict[str, str]:
    """Each ModelConfig field's entry in the class docstring, as one line (what `flashgau train --help` shows)."""
    docs: dict[str, str] = {}
    name = None
    for line in (ModelConfig.__doc__ or "").splitlines():
        entry = re.match(r"^    (\w+):\s+(.*)$", line)
        if entry and entry.group(1) in ModelConfig.__dataclass_fields__:
            name = entry.group(1)
            docs[name] = entry.group(2).strip()
        elif name and line.startswith("     ") and line.strip():
            docs[name] += " " + line.strip()
        else:
            name = None
    return docs


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def combiner_auto_chunk(context: int) -> int:
    """Combiner's chunk length for training at `context` tokens: 2^ceil(log2(T)/2), the power of two at or above
    sqrt(T) (T = 512: 32, 2048 and 4096: 64, 8192 and 16384: 128). Combiner-Fixed costs O(T (C + T/C)), least at
    C = sqrt(T): its authors' "sqrt" layer."""
    return min(context, 2 ** math.ceil(math.log2(max(context, 1)) / 2))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
