"""One typed generation request. Every front end (CLI, studio, API) builds one of these."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

MODES = ("TA", "TIA", "TI")


@dataclass
class GenerationRequest:
    prompt: str
    variant: str = "tiny"
    mode: str = "TIA"                    # TA: text+audio, TIA: text+image+audio, TI: text+image
    images: list[str] = field(default_factory=list)
    audio: str | None = None
    negative_prompt: str | None = None   # None: Wan's standard negative prompt
    frames: int | None = None            # None: follow the audio length (or the variant default)
    width: int | None = None             # None: the variant default
    height: int | None = None
    steps: int | None = None
    shift: float | None = None
    scale_t: float | None = None
    scale_i: float | None = None
    scale_a: float | None = None
    seed: int = 0
    out_path: str | None = None          # None: a temporary file
    preview: bool = True                 # yield per-step previews
    preview_max_side: int = 160          # previews are small on purpose
    fast_mode: str | None = None         # None: exact; else an approximate cache preset
    metadata: dict[str, Any] = field(default_factory=dict)  # extra settings to embed in the MP4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationRequest":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
