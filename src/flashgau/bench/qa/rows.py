"""The rows of `flashgau bench qa`: the paper's six (ROWS) and two more of the retrieval tasks (RETRIEVAL_ROWS),
each an arch with model options on top of the preset."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import ModelConfig

QA_CHUNK = 128


@dataclass(frozen=True)
class Row:
    """One row of the table: `arch` with `model` options on top of the preset; `qk_scale` times the preset's s."""

    label: str
    slug: str
    arch: str
    qk_scale: int = 1
    model: dict = field(default_factory=dict)


ROWS: tuple[Row, ...] = (
    Row("Transformer+", "transformer+", "transformer+"),
    Row("Combiner", "combiner", "combiner", model={"combiner_chunk_size": "auto"}),
    Row("FLASH-Quad, s = 128", "flash-quad-s128", "flash-quad"),
    Row("FLASH-Quad, s = 512", "flash-quad-s512", "flash-quad", 4),
    Row("FLASH, s = 512", "flash-s512", "flash", 4, {"chunk_size": QA_CHUNK}),
    Row("FLASH, s = 512 + first-to-all", "flash-s512-first-to-all", "flash", 4,
        {"chunk_size": QA_CHUNK, "first_to_all": True}),
)
# Two more rows of the retrieval tasks (bench/qa/retrieval.py): FLASH at the preset's own s, and FLASH s = 512 with
# its global (linear) part off.
RETRIEVAL_ROWS: tuple[Row, ...] = (
    Row("FLASH, s = 128 (the preset's)", "flash-s128", "flash", 1, {"chunk_size": QA_CHUNK}),
    Row("FLASH, s = 512, local only", "flash-s512-local", "flash", 4,
        {"chunk_size": QA_CHUNK, "mixed_chunk_parts": "local"}),
)


def model_options(row: Row, s) -> dict:
    """The row's ModelConfig options at the settings' preset (s scaled from the preset's own)."""
    options = dict(row.model)
    if row.qk_scale != 1:
        base = ModelConfig.preset(s.preset, arch=row.arch).qk_dim
        options["qk_dim"] = base * row.qk_scale
    return options
