"""Slow, obviously correct attention: dense T x T matrices and explicit masks, the spec in code (plus one short
chunked listing, below).

One module per fast op, with the same name: flashgau.ops.<op>.py is tested against reference/<op>.py, and every fast
function against the function here with the same name plus `_reference`. mixed_chunk.py also holds
`mixed_chunk_attention_minimal`, the chunked algorithm in a few einsums (FLASH's counterpart of mamba's
ssd_minimal.py). masks.py holds the dense visibility mask they share.
"""
