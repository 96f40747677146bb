"""Working in Jupyter: `setup()` puts an exercise's tensors in the notebook, `check()` grades in place.

`check()` compares the notebook's own gradient variables with what they should be:
after `setup("ex1")`, with the reference gradients; in a student's own lecture
notebook, with the `.grad` of the notebook's own tensors (run the forward pass with
`retain_grad()` and `loss.backward()` first), as the lecture's `cmp()` does, but
with the shape gate and the hints. The result shows as an HTML table in Jupyter
and as the text table elsewhere.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from grader.compare import FileResult, compare
from grader.exercises import BY_ID, EX1, EXERCISES
from grader.execution import Answer

MARK = "__backprop_ninja__"


def _caller_namespace(depth: int = 2) -> dict:
    return sys._getframe(depth).f_globals


def setup(exercise: str = "ex1", namespace: dict | None = None) -> str:
    """Run the reference forward pass of an exercise and put its tensors, sizes, `torch` and `F`
    in the notebook (or `namespace`). Returns a one-line summary."""
    from grader.grading import first_reference

    if exercise not in BY_ID:
        raise ValueError(f"there is no exercise {exercise!r}; choose one of {', '.join(BY_ID)}")
    chosen = BY_ID[exercise]
    ns = namespace if namespace is not None else _caller_namespace()
    ref = first_reference(chosen)
    ns.update(torch=torch, F=F)
    ns.update(ref.scope(chosen.scope))
    for name in chosen.given:
        ns[name] = ref.gradients[name[1:]].clone()
    ns[MARK] = chosen.id
    loss = ref.tensors["loss"].item()
    return f"{chosen.title}: the forward pass has run (loss {loss:.4f}); {len(chosen.targets)} gradients to write"


class CheckResult:
    """What `check()` found: a `FileResult`, shown as HTML in Jupyter and as text elsewhere."""

    def __init__(self, result: FileResult, message: str | None = None):
        self.result = result
        self.message = message

    @property
    def results(self):
        return self.result.results

    @property
    def passed(self) -> bool:
        return self.result.passed and bool(self.result.results)

    def __repr__(self) -> str:
        from grader.reports import text_report

        return self.message if not self.result.results and self.message else text_report(self.result)

    def _repr_html_(self) -> str:
        from grader.reports import html_report

        return html_report(self.result, message=self.message)


def check(namespace: dict | None = None, *, names: dict[str, str] | str | None = None) -> CheckResult:
    """Grade the gradient variables of a notebook (or `namespace`) where they are.

    `names` maps the notebook's own names to the lecture's: {"d_log_probs": "dlogprobs"}
    or "d_log_probs=dlogprobs,...".
    """
    from grader.grading import first_reference, with_bank_hints
    from grader.notebooks import parse_names

    ns = namespace if namespace is not None else _caller_namespace()
    mapping = parse_names(names) if isinstance(names, str) else dict(names or {})
    own = {new: old for old, new in mapping.items()}  # lecture name -> the notebook's name

    if ns.get(MARK) in BY_ID:
        exercise = BY_ID[ns[MARK]]
        ref = first_reference(exercise)
        expected = {t: ref.gradients[exercise.tensor_of(t)] for t in exercise.targets}
        source = f"setup({exercise.id!r})"
    else:
        exercise = EX1
        targets = dict.fromkeys(t for e in EXERCISES if e.kind == "lines" for t in e.targets)
        expected = {}
        for target in targets:
            tensor = ns.get(target[1:])
            if isinstance(tensor, torch.Tensor) and tensor.grad is not None:
                expected[target] = tensor.grad.detach()
        source = "this notebook's own tensors"
        if not expected:
            message = ("check(): no tensor here has a .grad: run the forward pass with retain_grad() on every "
                       "intermediate and loss.backward() first, or call setup('ex1') to use the kit's forward pass")
            return CheckResult(FileResult(file="notebook", exercise=None), message)

    results = []
    n = ns.get("n") if isinstance(ns.get("n"), int) else None
    for target, grad in expected.items():
        variable = own.get(target, target)
        if variable not in ns:
            answer = Answer(name=target, kind="missing")
        elif isinstance(ns[variable], torch.Tensor):
            answer = Answer(name=target, value=ns[variable].detach())
        else:
            value = ns[variable]
            kind = "None" if value is None else f"a {type(value).__name__}"
            answer = Answer(name=target, kind="other", description=kind)
        if answer.value is not None and answer.value.requires_grad:
            answer.value = answer.value.detach()
        results.append(compare(answer, grad, target[1:], n=n))
    result = FileResult(file=f"check() against {source}", exercise=exercise.id if ns.get(MARK) else None,
                        results=with_bank_hints(tuple(results)))
    return CheckResult(result)
