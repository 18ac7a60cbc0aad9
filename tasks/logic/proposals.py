"""Parsing the Proposer's structured outputs into questions and text-to-image specs.

A question proposal is "question ? | answer | answer" (the two answers are a hidden
validator); a spec is "prompt | question ? = answer | question ? = answer".

    >>> parse_question_proposal("what color is the square ? | red | blue")
    QuestionProposal(question='what color is the square ?', validators=('red', 'blue'), well_formed=True, reject_reason='')
    >>> parse_spec("a red circle | what color is the circle ? = red | how many objects are there ? = one").checks
    (('what color is the circle ?', 'red'), ('how many objects are there ?', 'one'))
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QuestionProposal:
    question: str
    validators: tuple[str, ...]
    well_formed: bool
    reject_reason: str = ""


@dataclass(frozen=True)
class Spec:
    prompt: str
    checks: tuple[tuple[str, str], ...]
    n_raw_checks: int

    @property
    def quality(self) -> float:
        """Q_spec = clip(0.5 min(1, n/2) + 0.3 valid/raw + 0.2 uniqueness - 0.2 [all yes/no], 0, 1)."""
        n = len(self.checks)
        if n == 0:
            return 0.0
        valid_share = n / max(1, self.n_raw_checks)
        uniqueness = len({q for q, _ in self.checks}) / n
        all_yes_no = all(a in ("yes", "no") for _, a in self.checks)
        return min(1.0, max(0.0, 0.5 * min(1.0, n / 2) + 0.3 * valid_share + 0.2 * uniqueness - 0.2 * all_yes_no))


def parse_question_proposal(text: str) -> QuestionProposal:
    parts = [p.strip() for p in text.split("|")]
    question = parts[0]
    validators = tuple(p for p in parts[1:] if p)
    if not question.endswith("?") or len(question.split()) < 3:
        reason = "no-question"
    elif len(validators) != 2:
        reason = "no-validator-pair"
    elif validators[0] == validators[1]:
        reason = "identical-validators"
    else:
        reason = ""
    return QuestionProposal(question, validators, not reason, reason)


def parse_spec(text: str) -> Spec:
    parts = [p.strip() for p in text.split("|")]
    prompt = parts[0] if parts and "=" not in parts[0] else ""
    raw = parts[1:]
    checks = []
    for part in raw:
        q, sep, a = part.partition("=")
        q, a = q.strip(), a.strip()
        if sep and q.endswith("?") and a and (q, a) not in checks:
            checks.append((q, a))
    return Spec(prompt, tuple(checks), len(raw))
