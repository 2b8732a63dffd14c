"""What a generation request says, checked, and the two keys the queue files it under.

The **cache key** hashes the canonical request: the model and the SHA-256 of its weights, the
prompt, the duration, every sampling parameter, the seed and the output format. Two requests
with equal keys get the same audio, so the second is answered from the cache (or joins the
first while it runs). The **batch key** leaves out what may differ inside one batched LM pass,
the prompt: jobs with equal batch keys are generated together.

Example:
    >>> r = GenerateRequest(prompt="lo-fi beat", duration=8, model="musicgen-small")
    >>> r.prompts_list
    ['lo-fi beat']
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

AudioFormat = Literal["wav", "flac", "ogg", "opus", "mp3"]


class GenerateRequest(BaseModel):
    """The JSON body of ``POST /v1/generate``.

    ``prompts`` makes one job per prompt (``None`` or ``""``: unconditional), ``prompt`` one.
    Sampling parameters are audiocraft's ``set_generation_params``; ``seed`` makes a job
    reproducible (jobs of different seeds are not batched together).
    """

    # Infinity and NaN (which Python's JSON reader takes) would fail the job later, or
    # come back as null in its request.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str | None = None
    prompts: list[str | None] | None = Field(default=None, min_length=1, max_length=64)
    model: str | None = None
    duration: float = Field(default=10.0, gt=0)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    use_sampling: bool = True
    top_k: int = Field(default=250, ge=0)
    top_p: float = Field(default=0.0, ge=0.0, le=1.0)
    temperature: float = Field(default=1.0, gt=0)
    cfg_coef: float = Field(default=3.0, ge=0)
    format: AudioFormat = "wav"
    cache: bool = True

    @model_validator(mode="after")
    def _one_kind_of_prompt(self) -> GenerateRequest:
        if self.prompt is not None and self.prompts is not None:
            raise ValueError("give 'prompt' or 'prompts', not both")
        return self

    @property
    def prompts_list(self) -> list[str | None]:
        return list(self.prompts) if self.prompts is not None else [self.prompt]

    def job_requests(self, model: str, weights: str) -> list[dict[str, Any]]:
        """One canonical request per prompt, with the model's name and weights' hash."""
        common = self.model_dump(exclude={"prompt", "prompts", "cache", "model"})
        return [
            {**common, "model": model, "weights": weights, "prompt": p or None}
            for p in self.prompts_list
        ]


def cache_key(request: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a job's request (sorted keys, no spaces)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def batch_key(request: dict[str, Any]) -> str:
    """The cache key of the request without its prompt: what one LM pass must share."""
    return cache_key({k: v for k, v in request.items() if k != "prompt"})
