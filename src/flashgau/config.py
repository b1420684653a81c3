"""Model configuration: one validated dataclass and named presets with matched parameter counts.

Sizing convention of the paper: one Transformer layer (attention + MLP, about 12 d^2 parameters) stands for two
GAU layers (about 6 d^2 + d s each), so the GAU archs ("flash", "flash-quad") stack twice as many layers as the
Transformer archs at the same preset.
"""

from __future__ import annotations

import dataclasses
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

# Per preset: width, Transformer-layer count (GAU archs get twice as many), and the shape fields.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, transformer_layers=1, qk_dim=32, n_heads=4, chunk_size=16, max_seq_len=2048),
    "small": dict(d_model=256, transformer_layers=4, qk_dim=128, n_heads=4, chunk_size=256),
    "base": dict(d_model=768, transformer_layers=12, qk_dim=128, n_heads=12, chunk_size=256),
}


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
    rel_pos:         relative position bias of GAU attention: "toeplitz" (learned, one weight per offset,
                     offsets clipped to +-511), "rope" (the paper's RoPE-factorised bias for long n), "none",
                     or "auto" (the paper's rule decided once from the config: toeplitz when the attention
                     span, chunk_size for flash or max_seq_len for flash-quad, is <= 512, else rope).
    normalizer:      how GAU attention scores are normalised; see docs/normalisers.md.
                     "fixed": FLASH-Quad divides q.k by the constant quad_norm_len; a causal output then
                     depends only on tokens <= t. "paper": FLASH-Quad divides by the sequence's real length n,
                     exactly as the paper's Code 1 (a causal model's past outputs change as the sequence
                     grows). FLASH (mixed chunk) is the paper's form in both modes: /C inside chunks, the
                     linear part averaged over the visible real tokens.
    quad_norm_len:   the constant n of the "fixed" normaliser (the paper trains FLASH-Quad at n = 512).
    scaled_sinusoid: add the paper's absolute sinusoid (one learnable scale, init 1/sqrt(d)) to embeddings.
    tie_embeddings:  share the input embedding and the output head.
    random_features: m, random features per layer of FAVOR+ ("performer"); a fixed buffer drawn at init.
    feature_redraw_interval: "performer" redraws its random features every this many training-mode forward
                     passes (0: never); never in eval mode or while decoding. See docs/baselines.md.
    dropout:         dropout on block outputs (the paper uses 0).
    init_std:        std of the normal initialisation of weights.
    attention_precision: "auto": GAU attention (FLASH, FLASH-Quad) runs in the dtype around it (bf16 under
                     autocast: the relu^2 scores, weights and A.v; the chunk summaries and counts stay fp32).
                     "fp32": those scores, weights and products run in fp32 under autocast too (the
                     projections stay in the autocast dtype). Not in the paper (TPU runs, precision unstated).
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
    tie_embeddings: bool = True
    dropout: float = 0.0
    init_std: float = 0.02
    random_features: int = 256
    feature_redraw_interval: int = 1000
    attention_precision: str = "auto"

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(f"invalid ModelConfig: {msg}")

        need(self.arch in ARCHS, f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        for name in ("vocab_size", "d_model", "n_layers", "max_seq_len", "qk_dim", "expansion", "n_heads",
                     "quad_norm_len"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 f"{name} must be a positive integer, got {value!r}")
        need(isinstance(self.chunk_size, int) and self.chunk_size >= 1,
             f"chunk_size must be an integer >= 1, got {self.chunk_size!r}")
        need(self.d_model % self.n_heads == 0,
             f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); change one of them")
        need(self.qk_dim % 2 == 0, f"qk_dim must be even for RoPE, got {self.qk_dim}")
        need((self.d_model // self.n_heads) % 2 == 0,
             f"head width d_model/n_heads = {self.d_model // self.n_heads} must be even for RoPE")
        need(self.ffn_dim is None or (isinstance(self.ffn_dim, int) and self.ffn_dim >= 1),
             f"ffn_dim must be None or a positive integer, got {self.ffn_dim!r}")
        need(self.norm in NORMS, f"norm must be one of {NORMS}, got {self.norm!r}")
        need(self.rel_pos in REL_POS, f"rel_pos must be one of {REL_POS}, got {self.rel_pos!r}")
        need(self.normalizer in NORMALIZERS, f"normalizer must be one of {NORMALIZERS}, got {self.normalizer!r}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.init_std > 0, f"init_std must be > 0, got {self.init_std}")
        need(self.attention_precision in ATTENTION_PRECISIONS,
             f"attention_precision must be one of {ATTENTION_PRECISIONS}, got {self.attention_precision!r}")
        need(isinstance(self.random_features, int) and not isinstance(self.random_features, bool)
             and self.random_features >= 1, f"random_features must be a positive integer, got {self.random_features!r}")
        need(isinstance(self.feature_redraw_interval, int) and not isinstance(self.feature_redraw_interval, bool)
             and self.feature_redraw_interval >= 0,
             f"feature_redraw_interval must be an integer >= 0 (0: never), got {self.feature_redraw_interval!r}")

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

    @property
    def attention_span(self) -> int:
        """Longest query-key distance a GAU's quadratic attention sees (chunk for flash, sequence otherwise)."""
        return min(self.chunk_size, self.max_seq_len) if self.arch == "flash" else self.max_seq_len

    def resolved_rel_pos(self) -> str:
        if self.rel_pos != "auto":
            return self.rel_pos
        return "toeplitz" if self.attention_span <= 512 else "rope"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ModelConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    @classmethod
    def preset(cls, name: str, *, arch: str = "flash", **overrides: Any) -> "ModelConfig":
        """A named size ("tiny", "small", "base") for `arch`; any field may be overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        if arch not in ARCHS:
            raise ConfigError(f"invalid ModelConfig: unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
        fields = dict(PRESETS[name])
        layers = fields.pop("transformer_layers")
        fields["n_layers"] = 2 * layers if arch in GAU_ARCHS else layers
        fields.update(overrides)
        return cls(arch=arch, **fields)
