"""Exercise 1 end to end: the solution, the stub, and single-line mistakes."""

from __future__ import annotations

import pytest

from grader.compare import Status
from grader.exercises import EX1
from grader.stubs import generate

from conftest import by_name, grade_text, replace_line


def test_solution_passes_every_gradient_exactly(solution):
    result = grade_text(solution)
    statuses = [r.status for r in result.results]
    assert len(statuses) == 26
    assert all(s.passed for s in statuses), [(r.name, r.status, r.hint) for r in result.results]
    assert statuses.count(Status.EXACT) >= 25
    assert result.error is None and result.score == 26.0


def test_committed_stub_is_generated_from_the_solution():
    assert EX1.stub_path.read_text(encoding="utf-8") == generate(EX1), "run `python -m grader.stubs`"


def test_stub_grades_all_blank():
    result = grade_text(EX1.stub_path.read_text(encoding="utf-8"))
    assert [r.status for r in result.results] == [Status.BLANK] * 26
    assert result.score == 0


@pytest.mark.parametrize("extra, said", [
    ('"""my notes"""\npass', None),  # nothing to run: every line blank, nothing said
    ("print('scratch work')", "output"),  # a stub is not run only when nothing in it would run
    ("import this", "note"),  # (which prints, and is not an import a gradient may use)
    ("import torch.nn.functional as G", None),
])
def test_a_stub_with_a_line_of_its_own_is_run_and_one_with_none_is_all_blank(extra, said):
    source = EX1.stub_path.read_text(encoding="utf-8").replace("import torch\n", f"import torch\n{extra}\n", 1)
    result = grade_text(source)
    assert [r.status for r in result.results] == [Status.BLANK] * 26 and result.error is None
    assert ("scratch work" in result.output) == (said == "output")
    assert (any("`import this` is not allowed" in note for note in result.notes)) == (said == "note")
    assert len(result.notes) == (said == "note")


def test_lecture_tanh_backward_is_approx_only(solution):
    source = replace_line(solution, "dhpreact =", "dhpreact = (1.0 - h**2) * dh")
    result = by_name(grade_text(source))
    assert result["dhpreact"].status is Status.APPROX
    assert 0 < result["dhpreact"].maxdiff < 1e-6


MISTAKES = {
    "transposed dW2": ("dW2 =", "dW2 = dlogits.T @ h", "dW2", "transpose"),
    "dbngain without keepdim": ("dbngain =", "dbngain = (bnraw * dhpreact).sum(0)", "dbngain", "keepdim=True"),
    "db2 without the batch sum": ("db2 =", "db2 = dlogits", "db2", "broadcast"),
    "dprobs sign flipped": ("dprobs =", "dprobs = -(1.0 / probs) * dlogprobs", "dprobs", None),
    "dbndiff2 with 1/n": ("dbndiff2 =", "dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar", "dbndiff2", None),
    "dbndiff without its second branch": ("dbndiff =", "dbndiff = bnvar_inv * dbnraw", "dbndiff", None),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_one_wrong_line_fails_that_tensor_only(solution, mistake):
    prefix, new, name, hint = MISTAKES[mistake]
    result = grade_text(replace_line(solution, prefix, new))
    failing = [r.name for r in result.results if not r.status.passed]
    assert failing == [name]
    assert by_name(result)[name].status is Status.FAIL
    if hint:
        assert hint in by_name(result)[name].hint


def test_dC_assigned_instead_of_accumulated_fails(solution):
    loop = (
        "dC = torch.zeros_like(C)\n"
        "for k in range(Xb.shape[0]):\n"
        "    for j in range(Xb.shape[1]):\n"
        "        ix = Xb[k, j]\n"
        "        dC[ix] {op} demb[k, j]\n"
    )
    right = by_name(grade_text(replace_line(solution, "dC =", loop.format(op="+="))))
    assert right["dC"].status is Status.EXACT
    wrong = grade_text(replace_line(solution, "dC =", loop.format(op="=")))
    assert [r.name for r in wrong.results if not r.status.passed] == ["dC"]


def test_shape_hint_names_the_broadcast_parameter(solution):
    source = replace_line(solution, "dbngain =", "dbngain = bnraw * dhpreact")
    hint = by_name(grade_text(source))["dbngain"].hint
    assert "(32, 64)" in hint and "(1, 64)" in hint and "dim 0" in hint


def test_lecture_dbnmeani_without_keepdim_fails_the_shape_gate(solution):
    # The lecture's cmp() broadcasts (64,) against (1, 64) and says exact; we must not.
    source = replace_line(solution, "dbnmeani =", "dbnmeani = (-dbndiff).sum(0)")
    result = by_name(grade_text(source))["dbnmeani"]
    assert result.status is Status.FAIL
    assert result.got_shape == (64,) and result.expected_shape == (1, 64)
    assert "keepdim=True" in result.hint
