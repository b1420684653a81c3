"""Slow, obviously correct attention: dense T x T matrices and explicit masks, no chunking. The spec in code;
every fast op in flashgau.ops is tested against the function here with the same name minus `_reference`."""
