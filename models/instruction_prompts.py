"""Instruction texts the adapters of real instruction-following models use for each role and framing."""

from __future__ import annotations

from text.normal_form import normalize_text

FRAMING_TEXT = {"canonical": "", "observational": "Look closely at the picture.",
                "analyst": "Think like an image analyst.", "direct": "Answer directly.",
                "examiner": "As an examiner, answer.", "concise": "Be concise.",
                "evidence": "Answer from visible evidence."}
ROLE_PROMPTS = {
    "ask": "Ask one question about the image with two candidate answers, as: question ? | answer | answer",
    "spec": "Write a text-to-image prompt for this image with checks, as: prompt | question ? = answer",
    "caption": "Describe the image in one sentence.",
}


def question_text(question: str, framing: str) -> str:
    """A Solver question in its normal form under a framing (the canonical framing adds nothing).

    >>> question_text("What colour is the triangle?", "direct")
    'what color is the triangle ? Answer directly.'
    """
    return f"{normalize_text(question)} {FRAMING_TEXT.get(framing, '')}".strip()
