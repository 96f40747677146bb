"""Diagnosis: hints that say why a line is wrong, and answers that only work by accident."""

from __future__ import annotations

import re
import json

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.compare import Status
from grader.exercises import EX2

from conftest import BAD_SETTINGS, by_name, grade_text, replace_line


def failing(result) -> list[str]:
    return [r.name for r in result.results if not r.status.passed]


def test_shape_gate_catches_the_lectures_own_dbnmeani_and_says_the_values_are_right(solution):
    result = by_name(grade_text(replace_line(solution, "dbnmeani =", "dbnmeani = (-dbndiff).sum(0)")))["dbnmeani"]
    assert result.status is Status.FAIL
    assert result.hint.startswith("the values are right; only the shape is wrong") and "keepdim=True" in result.hint


def test_right_shape_does_not_get_the_values_are_right_hint(solution):
    result = by_name(grade_text(replace_line(solution, "dW2 =", "dW2 = dlogits.T @ h")))["dW2"]
    assert "values are right" not in result.hint


HARDCODED = {
    "dlogprobs": ("dlogprobs = -1.0/32 * F.one_hot(Yb, num_classes=vocab_size).float()", "uses 32; use `n`"),
    "demb": ("demb = dembcat.view(-1, 3, 10)", "uses 3; use `block_size`"),
    "dlogits": (
        "dlogits = dnorm_logits + torch.zeros([32, 27]).scatter_(1, logits.max(1, keepdim=True).indices, 1.0) * dlogit_maxes",
        "uses 27; use `vocab_size`",
    ),
}


@pytest.mark.parametrize("name", HARDCODED)
def test_a_hard_coded_size_passes_the_lecture_sizes_only_and_is_named(solution, name):
    line, expected = HARDCODED[name]
    result = grade_text(replace_line(solution, f"{name} =", line))
    assert failing(result) == [name]
    hint = by_name(result)[name].hint
    assert "right at the lecture's sizes but not at other sizes" in hint and expected in hint


def test_sizes_taken_from_the_names_in_scope_pass_everywhere(solution):
    result = grade_text(replace_line(solution, "demb =", "demb = dembcat.view(-1, block_size, n_embd)"))
    assert failing(result) == []


@pytest.mark.parametrize("line", [
    "loss.backward()\ndlogprobs = logprobs.grad",
    "dlogprobs = torch.autograd.grad(loss, logprobs)[0]",
    "dlogprobs = getattr(logprobs, 'gr' + 'ad')",
    "g = getattr(torch, 'auto' + 'grad')\ndlogprobs = g.grad(loss, logprobs)[0]",
])
def test_autograd_and_interpreter_tricks_fail_with_the_policy_hint(solution, line):
    result = by_name(grade_text(replace_line(solution, "dlogprobs =", line)))["dlogprobs"]
    assert result.status is Status.FAIL and result.policy == "autograd"
    assert "by hand" in result.hint and re.search(r"line 1[23]\b.*`[\w.]+` is not allowed", result.hint)  # the refused access


def test_a_value_from_a_refused_line_taints_every_gradient_computed_from_it_to_the_last(solution):
    # A flag read on a refused line, kept in a helper, then in a second helper, and mixed into every
    # gradient from `dh` on: each of those is the refused access's doing, not only the first.
    lines = solution.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("dh ="))
    cheated = []
    for i in range(start, len(lines)):
        found = re.match(r"(d\w+) (\+)?= ([^#]*)", lines[i])
        if found:
            lines[i] = f"{found[1]} {found[2] or ''}= {found[3].strip()} + 0 * later"
            cheated.append(found[1])
    lines.insert(start, "peek = getattr(h, 'requires' + '_grad')\nlater = peek * 2")
    result = grade_text("\n".join(lines) + "\n")
    assert len(cheated) == 18 and cheated[-1] == "dC"
    assert failing(result) == cheated
    assert all(by_name(result)[name].policy == "autograd" for name in cheated)
    assert all(r.status is Status.EXACT for r in result.results if r.name not in cheated)  # dlogprobs .. dlogits


def test_a_refused_line_fails_only_what_it_assigns_and_what_is_computed_from_it(solution):
    # A stray `loss.backward()` assigns nothing: it is refused (a note) and fails no gradient.
    result = grade_text(replace_line(solution, "dh =", "loss.backward()\ndh = dlogits @ W2.T"))
    assert failing(result) == [] and any("backward" in note for note in result.notes)
    # A helper assigned on a refused line taints the gradients computed from it, and only those.
    cheat = "helper = getattr(h, 'requires' + '_grad')\ndh = dlogits @ W2.T + 0 * helper"
    result = grade_text(replace_line(solution, "dh =", cheat))
    assert failing(result) == ["dh"] and by_name(result)["dh"].policy == "autograd"
    assert "requires_grad" in by_name(result)["dh"].hint
    # An import the code may not make, on a line of its own, fails nothing.
    result = grade_text(replace_line(solution, "dlogprobs =", "import gc\n" + solution.split("\n")[11]))
    assert failing(result) == [] and any("import gc" in note for note in result.notes)


def test_library_shortcuts_fail_in_ex1_but_softmax_is_allowed_in_ex2(solution):
    shortcut = "dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)) / n"
    result = by_name(grade_text(replace_line(solution, "dlogits =", shortcut)))["dlogits"]
    assert result.status is Status.FAIL and result.policy == "shortcut" and "softmax" in result.hint
    assert grade_text(EX2.solution_path.read_text(), exercise=EX2).passed


def test_policy_is_in_the_json(tmp_path, solution):
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(replace_line(solution, "dprobs =", "dprobs = probs.grad"))
    data = json.loads(CliRunner().invoke(cli, [str(path), "--json"]).output)
    row = next(r for r in data["results"] if r["name"] == "dprobs")
    assert row["status"] == "fail" and row["policy"] == "autograd"


FACTORS = {
    "dbndiff2": ("dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar", "matches the variance with 1/n", "Bessel"),
    "dprobs": ("dprobs = -(1.0 / probs) * dlogprobs", "opposite sign", None),
    "dbnvar": ("dbnvar = (-1.0*(bnvar + 1e-5)**-1.5) * dbnvar_inv", "is 2 times", None),
    "dh": ("dh = dlogits @ W2.T * n", "is n times", None),
    "db2": ("db2 = dlogits.mean(0)", "is 1/n times", None),
}


@pytest.mark.parametrize("name", FACTORS)
def test_a_constant_factor_is_named(solution, name):
    line, expected, extra = FACTORS[name]
    result = by_name(grade_text(replace_line(solution, f"{name} =", line)))[name]
    assert result.status is Status.FAIL and expected in result.hint
    if extra:
        assert extra in result.hint


def test_a_right_answer_gets_no_hint(solution):
    assert all(r.hint is None for r in grade_text(solution).results)


def test_an_odd_factor_is_given_as_a_number(solution):
    result = by_name(grade_text(replace_line(solution, "dh =", "dh = dlogits @ W2.T * 1.7")))["dh"]
    assert "1.7 times the right gradient" in result.hint


def test_zero_where_the_reference_is_not(solution):
    result = by_name(grade_text(replace_line(solution, "dW1 =", "dW1 = torch.zeros_like(W1)")))["dW1"]
    assert "all zeros" in result.hint


# --- chained verdicts ---


def test_one_wrong_upstream_line_leaves_the_rest_passing_and_the_chain_names_it(solution):
    result = grade_text(replace_line(solution, "dlogprobs =", "dlogprobs = -1.0/n * F.one_hot(Yb, num_classes=vocab_size).float() * 2"))
    got = by_name(result)
    assert failing(result) == ["dlogprobs"]
    assert sum(r.status.passed for r in result.results) == 25
    assert got["dprobs"].chained == "fail"
    assert "your chain breaks earlier, at `dlogprobs`" in got["dprobs"].hint
    assert all(r.chained in ("exact", "approx") for r in grade_text(solution).results)


# --- the random-upstream probe ---


@pytest.mark.parametrize("name, line", [
    ("dlogit_maxes", "dlogit_maxes = dnorm_logits.sum(1, keepdim=True)"),  # sign flipped: still ~0
    ("db1", "db1 = 2 * dhprebn.sum(0)"),
])
def test_a_wrong_formula_for_a_gradient_that_is_zero_in_truth_fails_the_probe(solution, name, line):
    result = by_name(grade_text(replace_line(solution, f"{name} =", line)))[name]
    assert result.status is Status.FAIL and result.probe == "fail"
    assert "right here only because the true gradient is zero" in result.hint


def test_the_probe_is_skipped_for_a_correct_inlined_shortcut(solution):
    # dhprebn straight from dbnraw and dbndiff2 inlines a path: not probed, and still passes.
    source = replace_line(solution, "dhprebn =", "dhprebn = dbndiff + 1.0/n * (torch.ones_like(hprebn) * (-(bnvar_inv * dbnraw + (2*bndiff) * dbndiff2)).sum(0, keepdim=True))")
    result = by_name(grade_text(source))["dhprebn"]
    assert result.status.passed and result.probe is None


# --- missing branches ---


@pytest.mark.parametrize("name, line, kept, missing", [
    ("dbndiff", "dbndiff = bnvar_inv * dbnraw", "bnraw", "bndiff2"),
    ("dcounts", "dcounts = counts_sum_inv * dprobs", "probs", "counts_sum"),
    ("dlogits", "dlogits = dnorm_logits.clone()", "norm_logits", "logit_maxes"),
    ("dhprebn", "dhprebn = dbndiff.clone()", "bndiff", "bnmeani"),
])
def test_a_missing_branch_is_named(solution, name, line, kept, missing):
    result = by_name(grade_text(replace_line(solution, f"{name} =", line)))[name]
    assert result.status is Status.FAIL
    assert f"has the path through `{kept}` but not the one through `{missing}`" in result.hint


# --- aliases, few entries, rounding, the shape gate setting ---


def test_an_answer_changed_in_place_through_an_alias_fails_and_names_the_line(solution):
    source = replace_line(
        solution, "dlogits =",
        "dlogits = dnorm_logits\ndlogits += F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes",
    )
    result = by_name(grade_text(source))
    line = source.splitlines().index("dlogits += F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes") + 1
    assert result["dnorm_logits"].status is Status.FAIL
    assert f"line {line} changed `dnorm_logits` in place" in result["dnorm_logits"].hint
    assert ".clone()" in result["dnorm_logits"].hint
    assert result["dlogits"].status.passed  # the line that changed it is itself right
    assert all(r.warning is None and r.status.passed for r in grade_text(solution).results)


def test_the_lectures_alias_of_dbndiff_fails_dbndiff(solution):
    source = replace_line(solution, "dhprebn =", "dhprebn = dbndiff\ndhprebn += 1.0/n * (torch.ones_like(hprebn) * dbnmeani)")
    result = by_name(grade_text(source))
    assert result["dbndiff"].status is Status.FAIL and "alias" in result["dbndiff"].hint
    assert result["dhprebn"].status.passed


def test_wrong_in_a_few_entries_says_where(solution):
    source = replace_line(solution, "dprobs =", "dprobs = (1.0 / probs) * dlogprobs\ndprobs[3, :] = 0")
    result = by_name(grade_text(source))["dprobs"]
    assert result.status is Status.FAIL and "right except in 1 of 864 entries (row 3" in result.hint


def test_a_rounding_only_difference_is_explained(solution):
    result = by_name(grade_text(replace_line(solution, "dhpreact =", "dhpreact = (1.0 - h**2) * dh")))["dhpreact"]
    assert result.status is Status.APPROX
    assert "the maths is right" in result.hint and "fused multiply-add" in result.hint
    exact = by_name(grade_text(solution))["dhpreact"]
    assert exact.hint is None


def test_every_near_miss_gets_the_float64_check_however_far_down_the_file(solution):
    """Each line that is off only by rounding is told so, not just the first (the float64 run answers
    for every line)."""
    source = replace_line(solution, "dhpreact =", "dhpreact = (1.0 - h**2) * dh")
    source = replace_line(source, "dbnvar =", "dbnvar = -0.5 * dbnvar_inv / (bnvar + 1e-5)**1.5")
    result = by_name(grade_text(source))
    for name in ("dhpreact", "dbnvar"):
        assert result[name].status is Status.APPROX and "in float64 your line matches" in result[name].hint, name


def test_the_shape_gate_can_be_relaxed_to_a_warning(solution):
    from grader.compare import Settings
    from grader.exercises import EX1
    from grader.grading import grade_source

    source = replace_line(solution, "dbnmeani =", "dbnmeani = (-dbndiff).sum(0)")
    relaxed = by_name(grade_source(source=source, filename="ex1.py", exercise=EX1,
                                   settings=Settings(shape_gate="warn")))["dbnmeani"]
    assert relaxed.status is Status.APPROX and "shape" in relaxed.warning
    wrong = replace_line(solution, "dbnmeani =", "dbnmeani = (dbndiff).sum(0)")
    assert by_name(grade_source(source=wrong, filename="ex1.py", exercise=EX1,
                                settings=Settings(shape_gate="warn")))["dbnmeani"].status is Status.FAIL


def test_an_instructor_settings_file_relaxes_the_shape_gate_and_allows_functions(tmp_path, solution):
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(replace_line(
        replace_line(solution, "dbnmeani =", "dbnmeani = (-dbndiff).sum(0)"),
        "dlogits =", "dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)) / n",
    ))
    strict = json.loads(CliRunner().invoke(cli, [str(path), "--json"]).output)
    assert {r["name"] for r in strict["results"] if r["status"] == "fail"} == {"dbnmeani", "dlogits"}
    settings = tmp_path / "grading.toml"
    settings.write_text('[grading]\nshape_gate = "warn"\n\n[exercises.ex1]\nallow = ["softmax"]\n')
    relaxed = json.loads(CliRunner().invoke(cli, [str(path), "--json", "--config", str(settings)]).output)
    assert all(r["status"] in ("exact", "approx") for r in relaxed["results"])


@pytest.mark.parametrize("text, words", BAD_SETTINGS)
def test_a_bad_settings_file_is_one_sentence_and_exit_2(tmp_path, text, words):
    settings = tmp_path / "grading.toml"
    settings.write_text(text)
    result = CliRunner().invoke(cli, ["solutions/ex1_backprop_all.py", "--config", str(settings)])
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


def test_rounding_noise_around_a_true_zero_passes_when_the_probe_confirms_the_formula(solution):
    from grader.compare import Settings
    from grader.exercises import EX1
    from grader.grading import grade_source

    # Summing in another order changes only the rounding noise of a gradient that is zero in truth;
    # an atol tighter than that noise would fail a right formula without the probe.
    source = replace_line(solution, "db1 =", "db1 = dhprebn.flip(0).sum(0)")
    strict = Settings(atol=1e-13)
    result = by_name(grade_source(source=source, filename="ex1.py", exercise=EX1, settings=strict))["db1"]
    assert result.status is Status.APPROX and result.probe == "pass" and "rounding noise" in result.hint
    wrong = replace_line(solution, "db1 =", "db1 = -dhprebn.flip(0).sum(0)")
    result = by_name(grade_source(source=wrong, filename="ex1.py", exercise=EX1, settings=strict))["db1"]
    assert result.status is Status.FAIL


# --- the hint bank ---


def test_every_target_has_a_hint_that_never_prints_the_answer():
    import ast as pyast

    from grader.exercises import EXERCISES
    from grader.hints import HINTS

    targets = {t for exercise in EXERCISES for t in exercise.targets}
    assert targets <= set(HINTS)
    answers = {}
    for exercise in EXERCISES:
        for node in pyast.parse(exercise.solution_path.read_text()).body:
            if isinstance(node, pyast.Assign) and isinstance(node.targets[0], pyast.Name):
                answers[node.targets[0].id] = pyast.unparse(node.value).replace(" ", "")
    for name, hint in HINTS.items():
        for text in (hint.short, hint.long):
            squeezed = text.replace(" ", "")
            assert not any(answer in squeezed for answer in answers.values() if len(answer) > 12), name


def test_a_failing_line_shows_the_bank_hint_and_a_passing_one_does_not(solution):
    result = by_name(grade_text(replace_line(solution, "dbnvar =", "dbnvar = (-1.0*(bnvar + 1e-5)**-1.5) * dbnvar_inv")))
    assert "power rule" in result["dbnvar"].about
    assert result["dbnvar_inv"].about is None


def test_grade_hint_explains_a_gradient_and_refuses_unknown_names():
    result = CliRunner().invoke(cli, ["hint", "dbnvar"])
    # The forward line it comes from, the local derivative, and the upstream gradient it multiplies.
    first, body = result.output.split("\n", 1)
    assert result.exit_code == 0 and first.startswith("dbnvar: `bnvar_inv = (bnvar + 1e-5)**-0.5`")
    assert "power rule" in first and "`dbnvar_inv`" in body
    variance = CliRunner().invoke(cli, ["hint", "bndiff2"])  # the tensor's own name works too
    assert variance.exit_code == 0 and variance.output.startswith("bndiff2: `bnvar = 1/(n-1) * bndiff2.sum(")
    assert "Bessel" in variance.output and "1/n instead of 1/(n-1)" in variance.output
    unknown = CliRunner().invoke(cli, ["hint", "dfoo"])
    assert unknown.exit_code == 2 and "no hint for 'dfoo'" in unknown.output


def test_the_table_says_where_to_start(tmp_path, solution):
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(replace_line(solution, "dbnvar =", "dbnvar = (-1.0*(bnvar + 1e-5)**-1.5) * dbnvar_inv"))
    output = CliRunner().invoke(cli, [str(path)]).output
    assert "start with `dbnvar`, line 36 · `grade hint dbnvar` explains it" in output
    assert "about: " in output


def test_broadcast_shapes_agree_with_torch_and_reject_misfits():
    """The shape stories' own broadcasting rule is torch's (which imports sympy on first use)."""
    import itertools

    import torch

    from grader.compare import broadcast_shape

    shapes = [(), (1,), (3,), (1, 3), (2, 1), (2, 3), (4, 2, 3), (4, 1, 1), (5,), (2, 5), (1, 1, 3)]
    for a, b in itertools.product(shapes, repeat=2):
        try:
            expected = tuple(torch.broadcast_shapes(a, b))
        except RuntimeError:
            expected = None
        assert broadcast_shape(a, b) == expected, (a, b)
