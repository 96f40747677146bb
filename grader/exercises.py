"""The exercises: one declaration each, read by the CLI, the stub generator and the tests.

An exercise names the gradients a student writes (in backward order), the tensors
each is graded against, what is in scope while the student's code runs, and the
configurations it is graded at. Its stub and solution live at
`exercises/<slug>.py` and `solutions/<slug>.py`; the stub is generated from the
solution (see `grader.stubs`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from grader.network import LECTURE, Config, forward

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Exercise:
    """Everything one exercise is."""

    id: str  # "ex1"
    slug: str  # file stem: "ex1_backprop_all"
    title: str
    task: str  # what the student writes, for the stub's header
    targets: tuple[str, ...]  # gradient names, in backward order: "dlogprobs", ...
    forward: object = forward  # the forward pass whose tensors are in scope
    configs: tuple[Config, ...] = (LECTURE,)
    points: float = 1.0  # per target
    allowed: tuple[str, ...] = field(default_factory=tuple)  # extra names a line may use

    def tensor_of(self, target: str) -> str:
        """The tensor a gradient name belongs to: `dlogprobs` -> `logprobs`."""
        return target[1:]

    @property
    def stub_path(self) -> Path:
        return ROOT / "exercises" / f"{self.slug}.py"

    @property
    def solution_path(self) -> Path:
        return ROOT / "solutions" / f"{self.slug}.py"

    @property
    def max_score(self) -> float:
        return self.points * len(self.targets)


EX1 = Exercise(
    id="ex1",
    slug="ex1_backprop_all",
    title="Exercise 1: backprop through the whole network, one tensor at a time",
    task=(
        "Write the gradient of the loss with respect to every tensor of the forward pass,\n"
        "one line per tensor, in backward order: replace each `...` with an expression.\n"
        "`dX` is the gradient of `loss` with respect to `X` and has the shape of `X`."
    ),
    targets=(
        "dlogprobs", "dprobs", "dcounts_sum_inv", "dcounts_sum", "dcounts", "dnorm_logits",
        "dlogit_maxes", "dlogits", "dh", "dW2", "db2", "dhpreact", "dbngain", "dbnbias",
        "dbnraw", "dbnvar_inv", "dbnvar", "dbndiff2", "dbndiff", "dbnmeani", "dhprebn",
        "dembcat", "dW1", "db1", "demb", "dC",
    ),
)

EXERCISES: tuple[Exercise, ...] = (EX1,)
BY_ID = {exercise.id: exercise for exercise in EXERCISES}


def recognise(filename: str, assigned: set[str]) -> Exercise | None:
    """The exercise a file answers: from its name (`ex1_...`, `..._ex1_backprop_all.py`),
    else from the gradient names it assigns (the exercise whose targets it covers best)."""
    stem = Path(filename).stem.lower()
    for exercise in EXERCISES:
        if exercise.slug in stem or re.match(rf"{exercise.id}(\b|_|$)", stem):
            return exercise
    best, best_key = None, (0.0, 0)
    for exercise in EXERCISES:
        overlap = len(assigned & set(exercise.targets))
        key = (overlap / len(exercise.targets), overlap)
        if overlap and key > best_key:
            best, best_key = exercise, key
    return best
