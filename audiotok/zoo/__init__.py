"""The model zoo: which models exist, where their weights are, and reading them in every format.

Shared by the codecs (:func:`audiotok.load_codec`) and the language models
(:func:`audiotok.generate.load_lm`): ``codec_cards`` and ``lm_cards`` name the official
models, their sources and licences (no torch, so listing models stays fast); ``hub`` finds
their weights in the caches or downloads and verifies them; ``weights`` reads tensors safely
(no pickle beyond tensors) and builds modules around them; ``codec_checkpoints``,
``codec_convert``, ``lm_checkpoints``, ``lm_hf`` and ``lm_native`` read the ``encodec``,
transformers, audiocraft and audiotok formats into our key names; ``interpolation``
resolves the ``${...}`` references of audiocraft's YAML configs.
"""
