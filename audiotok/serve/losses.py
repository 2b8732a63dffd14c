"""What a ``recover`` decompress lost, told to the client with the audio.

A stream cut off or damaged decodes with what is missing as silence of the right length, so
without a word the client could not tell a recovered answer from a whole one. Over HTTP the
answer's ``X-Lost-Seconds`` and ``X-Problems`` headers say it, over gRPC the ``AudioReply``'s
``lost_seconds`` and ``problems`` (docs/SERVING.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..compression.decode import Decoded

# A header of bounded size however many stretches were damaged: clients cap a header's size
# (8 to 16 KiB), and a problem's line is about 100 characters.
MAX_PROBLEMS = 20

# The OpenAPI description of the headers of /v1/decompress's answer (X-Sample-Rate too).
DECOMPRESS_HEADERS: dict[str, Any] = {
    "X-Sample-Rate": {"description": "The audio's sample rate", "schema": {"type": "integer"}},
    "X-Lost-Seconds": {
        "description": "With recover=true: seconds of audio lost (damaged or cut off), silent "
        "in the answer, 3 decimals; 0.000 when nothing was. A stream cut off with neither its "
        "length nor its index counts only the gaps before the cut (how much followed it is "
        "unknown); X-Problems then says it was truncated.",
        "schema": {"type": "string", "example": "1.250"},
    },
    "X-Problems": {
        "description": "With recover=true, when anything was found wrong: one line per "
        "problem (a damaged stretch, the truncation, data after the stream's end ignored), "
        f"as `audiotok decompress --recover` warns, joined by '; ' (at most {MAX_PROBLEMS} "
        "and a count of the rest), printable ASCII.",
        "schema": {"type": "string"},
    },
}


class Loss(NamedTuple):
    """What a ``recover`` decode lost: ``Decoded.lost_seconds`` and ``problems()``, kept
    without the decoded audio (by then in the answer's file, and freed)."""

    seconds: float = 0.0
    problems: tuple[str, ...] = ()

    @classmethod
    def of(cls, decoded: Decoded | None) -> Loss:
        """What ``decoded`` lost; None (a long ``.atok`` decoded as a stream without
        ``recover``, which refuses a damaged one): nothing."""
        if decoded is None:
            return cls()
        return cls(decoded.lost_seconds, tuple(decoded.problems()))

    def headers(self) -> dict[str, str]:
        """``X-Lost-Seconds``, and ``X-Problems`` when there are any: the lines joined by
        ``; ``, made printable ASCII (a header's value is bytes; a reason may quote one)."""
        headers = {"X-Lost-Seconds": f"{self.seconds:.3f}"}
        if self.problems:
            lines = list(self.problems[:MAX_PROBLEMS])
            if len(self.problems) > MAX_PROBLEMS:
                lines.append(f"and {len(self.problems) - MAX_PROBLEMS} more")
            text = "; ".join(lines)
            headers["X-Problems"] = "".join(c if " " <= c <= "~" else "?" for c in text)
        return headers
