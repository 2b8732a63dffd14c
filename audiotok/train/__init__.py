"""Training codecs: data, losses, the loop, checkpoints and export (see docs/TRAINING.md)."""
