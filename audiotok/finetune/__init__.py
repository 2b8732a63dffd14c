"""Fine-tuning MusicGen and AudioGen on captioned token datasets (``audiotok finetune``).

A training package (inference never imports it): it reads a base LM with
:func:`audiotok.generate.load_lm`, a captioned token dataset made by ``audiotok encode`` with
the LM's own codec (:mod:`.data`), and trains the LM by audiocraft's objective (:mod:`.loss`:
cross-entropy over every codebook under the delay pattern, padding masked, classifier-free
guidance dropout of the condition) with AdamW, warm-up and cosine decay, in time-boxed slices
that resume exactly (:mod:`.loop`), optionally through LoRA adapters (:mod:`.lora`). The
result is exported in audiocraft's format and in audiotok's (:mod:`.export`). The recipe is
one YAML or JSON file (:mod:`.config`); docs/FINETUNING.md describes every key.
"""
