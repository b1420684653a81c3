"""nn.Modules that own parameters: norms, positions, GAU / FLASH layers, attention, feed-forward, blocks."""

from .blocks import BLOCKS, TransformerBlock, make_block
from .context import Context

__all__ = ["BLOCKS", "Context", "TransformerBlock", "make_block"]
