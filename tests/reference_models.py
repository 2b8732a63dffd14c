"""Reference implementations with random weights, written in each official checkpoint format.

Two independent implementations serve as references:

* the ``encodec`` package (Meta's original code; its modules are also audiocraft's, under the
  same key names), for ``.th`` files and audiocraft exports;
* Hugging Face transformers' ``EncodecModel``, for transformers directories.

Random weights alone would hide mistakes: transformers initialises codebooks to zeros (every
code would be 0) and norms to ones, so every tensor is perturbed and codebooks are drawn at
the scale of real latents.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import torch

# Architectures in the vocabulary of each reference; see audiotok.zoo.codec_cards for ours.
ARCHS: dict[str, dict[str, Any]] = {
    "encodec_24khz": dict(
        sample_rate=24_000, channels=1, causal=True, norm="weight_norm", pad_mode="reflect",
        n_filters=32, ratios=[8, 5, 4, 2], true_skip=False, n_q=32, bins=1024,
        bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0], normalize=False, segment=None,
    ),
    "encodec_48khz": dict(
        sample_rate=48_000, channels=2, causal=False, norm="time_group_norm", pad_mode="reflect",
        n_filters=32, ratios=[8, 5, 4, 2], true_skip=False, n_q=16, bins=1024,
        bandwidths=[3.0, 6.0, 12.0, 24.0], normalize=True, segment=1.0,
    ),
    "encodec_32khz": dict(
        sample_rate=32_000, channels=1, causal=False, norm="weight_norm", pad_mode="constant",
        n_filters=64, ratios=[8, 5, 4, 4], true_skip=True, n_q=4, bins=2048,
        bandwidths=[2.2], normalize=False, segment=None,
    ),
    "encodec_16khz": dict(
        sample_rate=16_000, channels=1, causal=False, norm="weight_norm", pad_mode="constant",
        n_filters=64, ratios=[8, 5, 4, 2], true_skip=True, n_q=4, bins=2048,
        bandwidths=[2.2], normalize=False, segment=None,
    ),
}  # fmt: skip


def import_encodec() -> types.ModuleType:
    """The ``encodec`` package, with an empty ``torchaudio`` if none is installed.

    ``encodec`` imports torchaudio only for its own file I/O, which the tests don't use, and no
    torchaudio build matches the torch installed here.
    """
    if "encodec" in sys.modules:
        return sys.modules["encodec"]
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        # The stub must not outlive the import: transformers probes torchaudio's spec.
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        try:
            import encodec
        finally:
            del sys.modules["torchaudio"]
    import encodec

    return encodec


@torch.no_grad()
def perturb_(module: torch.nn.Module, seed: int) -> None:
    """Adds noise to every floating tensor, so that no two layers share values."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and "codebook" not in name:
            noise = torch.randn(tensor.shape, generator=gen) * (0.1 * tensor.abs().mean() + 0.01)
            tensor.add_(noise)


@torch.no_grad()
def codebooks_from_latents_(codebooks: list[torch.Tensor], latent: torch.Tensor, seed: int) -> None:
    """Fills each codebook with noisy samples of the residual its stage will see.

    As k-means initialisation does: stage ``k``'s entries are frames of what stages ``< k``
    leave of ``latent`` ``[B, D, F]``, so that every stage picks among many entries.
    """
    gen = torch.Generator().manual_seed(seed)
    residual = latent.transpose(1, 2).reshape(-1, latent.shape[1])
    for embed in codebooks:
        picks = torch.randint(0, residual.shape[0], (embed.shape[0],), generator=gen)
        spread = (residual - residual.mean(0)).std()
        noise = torch.randn(embed.shape, generator=gen) * spread * 0.05
        embed.copy_(residual[picks] + noise)
        nearest = torch.cdist(residual, embed).argmin(dim=1)
        residual = residual - embed[nearest]


def encodec_package_model(arch: str, seed: int = 0) -> Any:
    """The ``encodec`` package's model for ``arch``, with random weights.

    The official 24 and 48 kHz models come from the package's own builders; the audiocraft
    architectures (32 and 16 kHz) are assembled from its modules with audiocraft's settings.
    """
    encodec = import_encodec()
    torch.manual_seed(seed)
    if arch == "encodec_24khz":
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False)
    elif arch == "encodec_48khz":
        model = encodec.EncodecModel.encodec_model_48khz(pretrained=False)
    else:
        a = ARCHS[arch]
        kwargs = dict(
            channels=a["channels"], dimension=128, n_filters=a["n_filters"],
            n_residual_layers=1, ratios=a["ratios"], norm=a["norm"], causal=a["causal"],
            pad_mode=a["pad_mode"], true_skip=a["true_skip"], compress=2, lstm=2,
        )  # fmt: skip
        encoder = encodec.modules.SEANetEncoder(**kwargs)
        decoder = encodec.modules.SEANetDecoder(**kwargs, trim_right_ratio=1.0)
        quantizer = encodec.quantization.ResidualVectorQuantizer(128, a["n_q"], a["bins"])
        model = encodec.EncodecModel(
            encoder, decoder, quantizer, a["bandwidths"], a["sample_rate"], a["channels"]
        )
    perturb_(model, seed)
    return model.eval()


def encodec_package_codebooks(model: Any) -> list[torch.Tensor]:
    return [layer._codebook.embed for layer in model.quantizer.vq.layers]


def hf_config(arch: str) -> Any:
    """transformers' ``EncodecConfig`` for ``arch``."""
    from transformers import EncodecConfig

    a = ARCHS[arch]
    return EncodecConfig(
        sampling_rate=a["sample_rate"], audio_channels=a["channels"],
        use_causal_conv=a["causal"], norm_type=a["norm"], pad_mode=a["pad_mode"],
        num_filters=a["n_filters"], upsampling_ratios=a["ratios"],
        use_conv_shortcut=not a["true_skip"], codebook_size=a["bins"],
        target_bandwidths=a["bandwidths"], normalize=a["normalize"],
        chunk_length_s=a["segment"], overlap=0.01 if a["segment"] else None,
    )  # fmt: skip


def hf_model(arch: str, seed: int = 0) -> Any:
    """transformers' ``EncodecModel`` for ``arch``, with random weights."""
    from transformers import EncodecModel

    config = hf_config(arch)
    torch.manual_seed(seed)
    model = EncodecModel(config)
    perturb_(model, seed)
    return model.eval()


def hf_codebooks(model: Any) -> list[torch.Tensor]:
    return [layer.codebook.embed for layer in model.quantizer.layers]


@torch.no_grad()
def calibrate_codebooks_(
    model: Any, kind: str, wav: torch.Tensor, arch: str, seed: int = 0
) -> None:
    """Sets a reference's codebooks from its own encoder's latents on ``wav`` ``[1, C, T]``.

    For models that normalise (48 kHz) the audio is brought to unit RMS first, as they do.
    """
    if ARCHS[arch]["normalize"]:
        wav = wav / wav.pow(2).mean().sqrt()
    if kind == "hf":
        codebooks_from_latents_(hf_codebooks(model), model.encoder(wav), seed)
    else:
        codebooks_from_latents_(encodec_package_codebooks(model), model.encoder(wav), seed)


@torch.no_grad()
def encodec_package_run(
    model: Any, wav: torch.Tensor, bandwidth: float | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Codes ``[B, K, F]``, scales ``[B, S]`` or None, and decoded audio ``[B, C, T]``.

    ``bandwidth=None`` uses every codebook, as audiocraft's compression models do.
    """
    model.bandwidth = bandwidth
    frames = model.encode(wav)
    codes = torch.cat([codes for codes, _ in frames], dim=-1)
    scales = None if frames[0][1] is None else torch.cat([s for _, s in frames], dim=1)
    return codes, scales, model.decode(frames)[..., : wav.shape[-1]]


@torch.no_grad()
def hf_run(
    model: Any, wav: torch.Tensor, bandwidth: float
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Codes ``[B, K, F]``, scales ``[B, S]`` or None, and decoded audio ``[B, C, T]``."""
    out = model.encode(wav, bandwidth=bandwidth, return_dict=True)
    chunks = list(out.audio_codes)
    pad = out.last_frame_pad_length or 0
    if pad:
        chunks[-1] = chunks[-1][..., :-pad]
    codes = torch.cat(chunks, dim=-1)
    scales = None if out.audio_scales[0] is None else torch.cat(out.audio_scales, dim=1)
    audio = model.decode(
        out.audio_codes, out.audio_scales, last_frame_pad_length=pad, return_dict=True
    ).audio_values
    return codes, scales, audio[..., : wav.shape[-1]]


def audiocraft_yaml(arch: str) -> str:
    """An audiocraft ``xp.cfg`` for ``arch``, as ``OmegaConf.to_yaml`` writes it.

    Interpolations stay unresolved (``${sample_rate}``), as in the published files.
    """
    a = ARCHS[arch]
    ratios = ", ".join(str(r) for r in a["ratios"])
    return f"""\
device: cuda
dtype: float32
sample_rate: {a["sample_rate"]}
channels: {a["channels"]}
compression_model: encodec
encodec:
  autoencoder: seanet
  quantizer: rvq
  sample_rate: ${{sample_rate}}
  channels: ${{channels}}
  causal: {str(a["causal"]).lower()}
  renormalize: false
seanet:
  dimension: 128
  channels: ${{channels}}
  causal: ${{encodec.causal}}
  n_filters: {a["n_filters"]}
  n_residual_layers: 1
  ratios:
  - {ratios.replace(", ", chr(10) + "  - ")}
  activation: ELU
  activation_params:
    alpha: 1.0
  norm: {a["norm"]}
  norm_params: {{}}
  kernel_size: 7
  residual_kernel_size: 3
  last_kernel_size: 7
  dilation_base: 2
  pad_mode: {a["pad_mode"]}
  true_skip: {str(a["true_skip"]).lower()}
  compress: 2
  lstm: 2
  disable_norm_outer_blocks: 0
  decoder:
    trim_right_ratio: 1.0
    final_activation: null
    final_activation_params: null
  encoder: {{}}
rvq:
  n_q: {a["n_q"]}
  q_dropout: false
  bins: {a["bins"]}
  decay: 0.99
  kmeans_init: true
  kmeans_iters: 50
  threshold_ema_dead_code: 2
  orthogonal_reg_weight: 0.0
  orthogonal_reg_active_codes_only: false
"""


def save_encodec_th(model: Any, directory: Path, name: str) -> Path:
    """Writes a bare state dict, as the ``encodec`` package's ``.th`` files are."""
    path = directory / name
    torch.save(model.state_dict(), path)
    return path


def save_audiocraft(model: Any, directory: Path, arch: str) -> Path:
    """Writes an audiocraft export, as ``audiocraft.utils.export.export_encodec`` does."""
    path = directory / "compression_state_dict.bin"
    pkg = {
        "best_state": model.state_dict(),
        "xp.cfg": audiocraft_yaml(arch),
        "version": "1.3.0",
        "exported": True,
    }
    torch.save(pkg, path)
    return path
