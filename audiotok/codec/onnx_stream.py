"""Streaming with ONNX Runtime: the one-step graphs of :mod:`~audiotok.codec.onnx_stream_export`.

:class:`OnnxStream` has the methods of the torch stream (:class:`~audiotok.codec.streaming.
CodecStream`), so files, the service and generation stream with either backend::

    with onnx_codec.streaming(batch_size=1, bandwidth=6.0) as stream:
        for chunk in chunks:                     # [B, C, n], any n
            codes = stream.encode(chunk)         # [B, K, f], the frames now complete
            audio = stream.decode(codes)         # [B, C, f * hop]
        codes = stream.encode_end()              # the last, partly padded frame

How the graphs are fed: audio waits until a whole frame is in (a causal model codes a frame
once its last sample is), and the first call waits for the ``start_samples`` that the start
graph's padding reads (one frame with constant padding; 7 with ``reflect``, the official 24
kHz model's). A stream that ends sooner is coded by the offline graphs, which is what a start
graph would have computed. Codes are the offline graphs' on the same audio, audio within
float rounding of them (tests/test_onnx_streaming.py). Chunks may be numpy arrays or torch
tensors; what comes back is numpy's, as from the codec.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .stream_checks import StreamGuard


class OnnxStream:
    """Chunked encoding and decoding with the streaming graphs of ``codec``.

    Args:
        codec: An :class:`~audiotok.codec.onnx_runtime.OnnxCodec` with streaming graphs.
        batch_size: Signals streamed in parallel.
        num_codebooks: Codebooks ``K`` to produce.
    """

    def __init__(self, codec: Any, batch_size: int, num_codebooks: int) -> None:
        self.codec, self.batch_size, self.num_codebooks = codec, batch_size, num_codebooks
        meta = codec.meta["streaming"]
        self.hop = codec.hop_length
        self.start_samples, self.start_frames = meta["start_samples"], meta["start_frames"]
        self._audio = np.zeros((batch_size, codec.channels, 0), np.float32)  # not yet coded
        self._codes = np.zeros((batch_size, 0, 0), np.int64)  # not yet decoded (before start)
        self._encoder_state: list[np.ndarray] | None = None
        self._decoder_state: list[np.ndarray] | None = None
        self.guard = StreamGuard(batch_size, codec.channels, codec.max_codebooks,
                                 codec.cardinality, framework="np")  # fmt: skip
        self._inputs: dict[str, list[str]] = {}  # graph -> its input names

    def __enter__(self) -> OnnxStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.guard.closed = True  # a finished stream can't be fed again

    def _run(self, graph: str, x: np.ndarray, state: list[np.ndarray] | None) -> tuple:
        """One call of ``graph``: ``(output, next state)``."""
        session = self.codec._sessions[graph]
        if graph not in self._inputs:  # asked once: this runs once per chunk
            self._inputs[graph] = [i.name for i in session.get_inputs()]
        feeds = dict(zip(self._inputs[graph], [x, *(state or [])], strict=True))
        output, *next_state = session.run(None, feeds)
        return output, next_state

    def encode(self, audio: Any) -> np.ndarray:
        """Audio ``[B, C, n]`` (any ``n``, even 0) -> codes ``[B, K, f]`` of completed frames.

        Raises:
            AudioError: A chunk of another shape, not float, or not finite.
        """
        self.guard.check_open("encode")
        self._audio = np.concatenate([self._audio, self.guard.chunk(audio)], axis=-1)
        started = self._encoder_state is not None
        if not started and self._audio.shape[-1] < self.start_samples:
            return self._no_codes()
        whole = self._audio.shape[-1] // self.hop * self.hop
        if whole == 0:
            return self._no_codes()
        chunk, self._audio = self._audio[..., :whole], self._audio[..., whole:]
        graph = "encoder_step" if started else "encoder_start"
        codes, self._encoder_state = self._run(graph, chunk, self._encoder_state)
        return codes[:, : self.num_codebooks].copy()

    def encode_end(self) -> np.ndarray:
        """Codes ``[B, K, f]`` of the last partial frame, padded as the offline encoder pads it
        (or of the whole signal, if it ended before the start graph's minimum)."""
        self.guard.check_open("encode")
        self.guard.encode_ended = True
        rest = self._audio
        self._audio = rest[..., :0]
        if rest.shape[-1] == 0:
            return self._no_codes()
        if self._encoder_state is None:
            codes, _ = self.codec._run_encoder(rest)
        else:
            codes, self._encoder_state = self._run("encoder_step", rest, self._encoder_state)
        return codes[:, : self.num_codebooks].copy()

    def _no_codes(self) -> np.ndarray:
        return np.zeros((self.batch_size, self.num_codebooks, 0), np.int64)

    def decode(self, codes: Any) -> np.ndarray:
        """Codes ``[B, K, f]`` -> audio ``[B, C, f * hop]`` (the first call waits for
        ``start_frames`` frames).

        Raises:
            TokensError: Codes of another shape, not integers, or out of range.
        """
        self.guard.check_open("decode")
        array = self.guard.codes(codes)
        if self._decoder_state is None:
            if self._codes.shape[-1]:
                array = np.concatenate([self._codes, array], axis=-1)
            if array.shape[-1] < self.start_frames:
                self._codes = array
                return self._no_audio()
            self._codes = array[..., :0]
            audio, self._decoder_state = self._run("decoder_start", array, None)
        elif array.shape[-1] == 0:
            return self._no_audio()
        else:
            audio, self._decoder_state = self._run("decoder_step", array, self._decoder_state)
        return audio

    def decode_end(self) -> np.ndarray:
        """Audio still owed: that of a stream shorter than ``start_frames`` (a causal decoder
        owes nothing else)."""
        self.guard.check_open("decode")
        self.guard.decode_ended = True
        if self._decoder_state is not None or self._codes.shape[-1] == 0:
            return self._no_audio()
        codes, self._codes = self._codes, self._codes[..., :0]
        return self.codec._run_decoder(codes, None)

    def _no_audio(self) -> np.ndarray:
        return np.zeros((self.batch_size, self.codec.channels, 0), np.float32)
