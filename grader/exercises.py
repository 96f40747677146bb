"""The exercises: one declaration each, read by the CLI, the stub generator and the tests.

An exercise names the gradients a student writes (in backward order), the tensors
each is graded against, what is in scope while the student's code runs, and the
configurations it is graded at. Its stub and solution live at
`exercises/<slug>.py` and `solutions/<slug>.py`; the stub is generated from the
solution (see `grader.stubs`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grader.configs import LECTURE, OTHER, PARAMETER_NAMES, SMALL, TRAINING, Config

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Exercise:
    """Everything one exercise is."""

    id: str  # "ex1"
    slug: str  # file stem: "ex1_backprop_all"
    title: str
    task: str  # what the student writes, for the stub's header
    targets: tuple[str, ...]  # gradient names, in backward order: "dlogprobs", ...
    # The forward pass shown in the stub, whose tensors are in scope: a function of `grader.network`,
    # named here so that reading the exercises does not import torch (see `forward`).
    forward_pass: str = "forward"
    kind: str = "lines"  # "lines": one forward pass; "training": inside the training loop
    scope: tuple[str, ...] | None = None  # tensors in scope; None: all of the forward pass's
    given: tuple[str, ...] = ()  # reference gradients in scope from the start, e.g. dhpreact
    blanks: tuple[str, ...] | None = None  # names blanked in the stub; None: the targets
    configs: tuple[Config, ...] = (LECTURE, OTHER, SMALL)  # a line passes only if it passes in each
    points: float = 1.0  # per target (and for the training run)
    allowed: tuple[str, ...] = field(default_factory=tuple)  # extra names a line may use
    scope_note: str = ""  # shown in the stub after the forward pass
    # The forward pass whose lines the error model differentiates (`grader.mistakes`), when not
    # `forward`: a fused one, for a gradient asked for in one go (a name, as `forward_pass`).
    derived_pass: str | None = None
    # Gradients graded, teacher-forced, when the student's code assigns them, but not scored: the
    # intermediates of exercise 4's loop, so a report points at the line where the chain breaks.
    intermediates: tuple[str, ...] = ()

    @property
    def forward(self):
        """The forward pass shown in the stub (a function of `grader.network`)."""
        from grader import network

        return getattr(network, self.forward_pass)

    @property
    def derived_from(self):
        """The forward pass the error model differentiates, when not `forward`; else None."""
        from grader import network

        return getattr(network, self.derived_pass) if self.derived_pass else None

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
    def graded(self) -> tuple[str, ...]:
        """The targets and the intermediates, in backward order (the order of the stub's blanks)."""
        if not self.intermediates:
            return self.targets
        order = self.blanks or self.targets
        return tuple(sorted((*self.targets, *self.intermediates), key=order.index))

    @property
    def checks(self) -> int:
        """What is scored: every target, and the training run for a training exercise."""
        return len(self.targets) + (self.kind == "training")

    @property
    def max_score(self) -> float:
        return self.points * self.checks


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

EX2 = Exercise(
    id="ex2",
    slug="ex2_cross_entropy",
    title="Exercise 2: backprop through cross-entropy in one go",
    task=(
        "The loss is `F.cross_entropy(logits, Yb)`. Write `dlogits`, the gradient of the loss\n"
        "with respect to `logits`, as one expression of `logits`, `Yb` and `n` (you may use\n"
        "`F.softmax`): no chunked intermediates (`probs`, `counts`, ...) are in scope.\n"
        "Even the lecture's answer is `approx`, not `exact`: that is a pass (rounding)."
    ),
    targets=("dlogits",),
    scope=(*PARAMETER_NAMES, "Xb", "Yb", "emb", "embcat", "hprebn",
           "bnmeani", "bndiff", "bndiff2", "bnvar", "bnvar_inv", "bnraw", "hpreact", "h", "logits"),
    scope_note="loss = F.cross_entropy(logits, Yb)  # the same loss, in one call",
    allowed=("softmax", "log_softmax"),
    derived_pass="forward_fused",
)

EX3 = Exercise(
    id="ex3",
    slug="ex3_batchnorm",
    title="Exercise 3: backprop through BatchNorm in one go",
    task=(
        "Given `dhpreact` (the correct gradient, in scope), write `dhprebn` as one expression\n"
        "of `dhpreact`, `bngain`, `bnvar_inv`, `bnraw` and `n`, without going through\n"
        "`dbnraw`, `dbnvar`, ... one at a time. Mind Bessel's correction: the variance\n"
        "divides by n-1."
    ),
    targets=("dhprebn",),
    given=("dhpreact",),
    derived_pass="forward_fused",
)

EX4 = Exercise(
    id="ex4",
    slug="ex4_training",
    title="Exercise 4: putting it all together, training on your own gradients",
    task=(
        "This block runs at every step of the lecture's training loop, after the forward\n"
        "pass below (`n_hidden` is 200 here). Write the whole backward pass down to the\n"
        "parameter gradients `dC dW1 db1 dW2 db2 dbngain dbnbias` (use your formulas from\n"
        "exercises 2 and 3). The grader compares them with autograd's at a few steps, then\n"
        "trains 1,000 steps on them and on autograd's, and checks the loss curves agree.\n"
        "`grade exercises/ex4_training.py --train` runs the lecture's full optimisation."
    ),
    targets=("dC", "dW1", "db1", "dW2", "db2", "dbngain", "dbnbias"),
    forward_pass="forward_fused",
    kind="training",
    blanks=("dlogits", "dh", "dW2", "db2", "dhpreact", "dbngain", "dbnbias", "dhprebn", "dembcat", "dW1",
            "db1", "demb", "dC"),
    intermediates=("dlogits", "dh", "dhpreact", "dhprebn", "dembcat", "demb"),
    configs=(TRAINING,),
    allowed=("softmax", "log_softmax"),
)

EXERCISES: tuple[Exercise, ...] = (EX1, EX2, EX3, EX4)
BY_ID = {exercise.id: exercise for exercise in EXERCISES}


def recognise(filename: str, assigned: set[str]) -> Exercise | None:
    """The exercise a file answers: from its name (`ex1_...`, `..._ex1_backprop_all.py`), else from
    the gradient names it assigns: exercise 1 when it assigns names only exercise 1 has (`dprobs`,
    `dbnvar`, ...), even with one renamed; else the exercise whose targets it covers best."""
    stem = Path(filename).stem.lower()
    named = []  # (where in the name, exercise): `Carol Lee - ex2.py` is exercise 2, `ex1_notes_for_ex2` is 1
    for exercise in EXERCISES:
        match = re.search(rf"{exercise.slug}|(?:^|[^a-z0-9]){exercise.id}(?![0-9])", stem)
        if match:
            named.append((match.start(), exercise))
    if named:
        return min(named, key=lambda item: item[0])[1]
    others = {t for exercise in EXERCISES if exercise is not EX1 for t in (*exercise.targets, *(exercise.blanks or ()))}
    if len(assigned & (set(EX1.targets) - others)) >= 2:
        return EX1
    best, best_key = None, (0.0, 0)
    for exercise in EXERCISES:
        overlap = len(assigned & set(exercise.targets))
        key = (overlap / len(exercise.targets), overlap)
        if overlap and key > best_key:
            best, best_key = exercise, key
    return best


def assigned_exercises(values: Iterable[str] | None) -> tuple[str, ...]:
    """The exercises of an assignment from `--exercise` values (each an id or a comma-separated list
    of ids), in the kit's order; all of them when none is named. `ValueError` (one sentence) for an
    id the kit does not have."""
    named = [part.strip().lower() for value in values or () for part in value.split(",") if part.strip()]
    unknown = [name for name in named if name not in BY_ID]
    if unknown:
        raise ValueError(f"there is no exercise {unknown[0]!r}; choose from {', '.join(BY_ID)}")
    if values and not named:
        raise ValueError(f"--exercise names no exercise; choose from {', '.join(BY_ID)}")
    return tuple(exercise_id for exercise_id in BY_ID if exercise_id in named) if named else tuple(BY_ID)
