"""Audio in and out: the first and last step of every path through audiotok.

``read`` reads files and converts rate (soxr) and channels (audiocraft's channel policy,
``convert_audio_channels``, restricted to unambiguous cases); ``write`` normalises and writes them
atomically in every format; ``blocks`` does both block by block, for files of any length in
bounded memory; ``loudness`` is the ITU-R BS.1770 meter the ``loudness`` strategy uses.
Audio is ``[C, T]`` (or ``[B, C, T]``) float in [-1, 1], numpy or torch; nothing here
imports torch at module level.
"""
