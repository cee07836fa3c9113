"""Guidance plans (SPEC §4) as data, and the one function that combines their passes.

A pass is one network call with a choice for each condition:
  text:  "text" (prompt) | "null" (negative prompt)
  audio: "audio" (windows A) | "zero" (the same tensor filled with zeros)
  image: "ref" | "zero"      (1.7B: what overwrites the reference latent frames)
         "y_c" | "y_null"    (17B: the channel condition y)
A plan lists its passes and how to combine them:
  pred = base + Σ scale_k · (plus_k − minus_k),
where each scale is a request scale (scale_t, scale_i, scale_a) plus a fixed offset.
The 17B image plans switch at t > switch_t (SPEC §4), so `plan_for` takes the timestep.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Pass:
    name: str
    text: str
    audio: str
    image: str


@dataclass(frozen=True)
class Term:
    scale: str          # "scale_t" | "scale_i" | "scale_a"
    plus: str
    minus: str
    offset: float = 0.0


@dataclass(frozen=True)
class Plan:
    passes: tuple[Pass, ...]
    terms: tuple[Term, ...]
    base: str

    def scales_used(self) -> set[str]:
        return {t.scale for t in self.terms}


# --- 1.7B: reference latents appended on the time axis --------------------------------------
_NEG = Pass("neg", "null", "zero", "zero")
_T = Pass("t", "text", "zero", "zero")
_TA = Pass("ta", "text", "audio", "zero")
_TIA = Pass("tia", "text", "audio", "ref")
_TI = Pass("ti", "text", "zero", "ref")

APPEND_PLANS = {
    "TIA": Plan((_NEG, _T, _TA, _TIA),
                (Term("scale_i", "tia", "ta"), Term("scale_a", "ta", "t"), Term("scale_t", "t", "neg")), "neg"),
    "TA": Plan((_NEG, _T, _TA), (Term("scale_a", "ta", "t"), Term("scale_t", "t", "neg")), "neg"),
    "TI": Plan((_NEG, _T, _TI), (Term("scale_i", "ti", "t"), Term("scale_t", "t", "neg")), "neg"),
}

# --- 17B: condition y on the channel axis ---------------------------------------------------
_C_TIA = Pass("tia", "text", "audio", "y_c")
_C_TI = Pass("ti", "text", "zero", "y_c")
_C_NEG_EARLY = Pass("neg", "null", "zero", "y_c")
_C_NEG_LATE = Pass("neg", "null", "zero", "y_null")
_C_TA = Pass("ta", "text", "audio", "y_null")
_C_T = Pass("t", "text", "zero", "y_null")

CHANNEL_PLANS_EARLY = {  # t > switch_t
    "TIA": Plan((_C_TIA, _C_TI, _C_NEG_EARLY), (Term("scale_a", "tia", "ti"), Term("scale_t", "ti", "neg")), "neg"),
    "TI": Plan((_C_TI, _C_NEG_EARLY), (Term("scale_t", "ti", "neg"),), "neg"),
}
CHANNEL_PLANS_LATE = {   # t <= switch_t
    "TIA": Plan((_C_TIA, _C_TI, _C_NEG_LATE),
                (Term("scale_a", "tia", "ti"), Term("scale_t", "ti", "neg", offset=-2.0)), "neg"),
    "TI": Plan((_C_TI, _C_NEG_LATE), (Term("scale_t", "ti", "neg", offset=-2.0),), "neg"),
}
CHANNEL_PLANS_TA = Plan((_C_TA, _C_T, Pass("neg", "null", "zero", "y_null")),
                        (Term("scale_a", "ta", "t"), Term("scale_t", "t", "neg")), "neg")


def plan_for(reference: str, mode: str, t: float, switch_t: float | None) -> Plan:
    """The plan for one step. `reference` is the variant's "append" or "channel" layout."""
    if reference == "append":
        return APPEND_PLANS[mode]
    if mode == "TA":
        return CHANNEL_PLANS_TA
    early = switch_t is not None and t > switch_t
    return (CHANNEL_PLANS_EARLY if early else CHANNEL_PLANS_LATE)[mode]


def combine(plan: Plan, outputs: dict[str, torch.Tensor], scales: dict[str, float]) -> torch.Tensor:
    """pred = base + Σ scale·(plus − minus), accumulated in float32."""
    pred = outputs[plan.base].float()
    for term in plan.terms:
        s = scales[term.scale] + term.offset
        pred = pred + s * (outputs[term.plus].float() - outputs[term.minus].float())
    return pred


def scales_needed(reference: str, mode: str) -> set[str]:
    """Which request scales a (layout, mode) uses — the studio shows only these sliders."""
    if reference == "append":
        return APPEND_PLANS[mode].scales_used()
    if mode == "TA":
        return CHANNEL_PLANS_TA.scales_used()
    return CHANNEL_PLANS_EARLY[mode].scales_used() | CHANNEL_PLANS_LATE[mode].scales_used()
