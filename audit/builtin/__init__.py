"""The embedded default: the ``builtin:shapes`` / ``builtin:shapes-pairs`` image sets and the
``builtin:shapes-resnet`` reference model with its training recipe.

Lowest layer with :mod:`audit.data` and :mod:`audit.models`: imports only top-level modules
(:mod:`audit.spec`, :mod:`audit.fills`, :mod:`audit.rise_masks`, :mod:`audit.seeding`).
"""
