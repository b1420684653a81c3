"""Slow, obviously correct attention: dense T x T matrices and explicit masks, no chunking. The spec in code.

One module per fast op, with the same name: flashgau.ops.<op>.py is tested against reference/<op>.py, and every fast
function against the function here with the same name plus `_reference`. masks.py holds the dense visibility mask
they share.
"""
