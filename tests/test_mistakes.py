"""The error model: a wrong line's hint names its mistake, at the statement where it goes wrong.

Each case feeds the grader a wrong gradient and expects `fail` with the words of the mistake;
the right forms around them must pass. `test_hint_quality.py` measures the same on hundreds of
generated mistakes; these are the cases a reader can check by eye.
"""

from __future__ import annotations

import ast
import subprocess
import shutil

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from grader.cli import cli
from grader.compare import Status, factor_hint
from grader.exercises import EX2, EX3, EX4
from grader.mistakes import Observation, _Context, _deriver, explain, terms

from conftest import by_name, grade_text, replace_line

HEADER = "import torch\nimport torch.nn.functional as F\n"

EX1_MISTAKES = {
    "counts for probs": ("dprobs =", "dprobs = (1.0 / counts) * dlogprobs",
                         ["uses `counts`", "needs `probs`"]),
    "b1 summed over dim 1": ("db1 =", "db1 = dhprebn.sum(1)", ["summed over dim 1", "sum over dim 0", "`b1`"]),
    "b2 summed over dim 1": ("db2 =", "db2 = dlogits.sum(1)", ["summed over dim 1", "`b2`", "(32,)"]),
    "sign of dlogit_maxes": ("dlogit_maxes =", "dlogit_maxes = dnorm_logits.sum(1, keepdim=True)",
                             ["sign", "zero"]),
    "factor of dlogit_maxes": ("dlogit_maxes =", "dlogit_maxes = 2 * (-dnorm_logits).sum(1, keepdim=True)",
                               ["2 times"]),
    "Bessel dropped": ("dbndiff2 =", "dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar",
                       ["variance with 1/n", "Bessel"]),
    "power rule off by one": ("dbnvar =", "dbnvar = (-0.5*(bnvar + 1e-5)**-0.5) * dbnvar_inv", ["power rule"]),
    "hpreact for h": ("dhpreact =", "dhpreact = (1 - hpreact**2) * dh", ["uses `hpreact`", "needs `h`"]),
    "counts for counts_sum_inv": ("dcounts =", "dcounts = counts * dprobs + torch.ones_like(counts) * dcounts_sum",
                                  ["uses `counts`", "needs `counts_sum_inv`"]),
    "minima for maxima": ("dlogits =", "dlogits = dnorm_logits + F.one_hot(logits.min(1).indices, "
                          "num_classes=vocab_size) * dlogit_maxes", ["minima"]),
    "overwritten rows of C": ("dC =", "dC = torch.zeros_like(C).index_copy_(0, Xb.view(-1), demb.view(-1, n_embd))",
                              ["overwrites", "(+=)"]),
    "n-1 in a mean": ("dlogprobs =", "dlogprobs = -1.0/(n-1) * F.one_hot(Yb, num_classes=vocab_size).float()",
                      ["n-1", "divides by n"]),
    "a gradient put in for another": ("dh =", "dh = dprobs @ W2.T", ["uses `dprobs`", "needs `dlogits`"]),
    "a path dropped by reading a gradient further up": ("dh =", "dh = dnorm_logits @ W2.T",
                                                        ["reads `dnorm_logits`", "needs `dlogits`"]),
    "the upstream gradient left out": ("dnorm_logits =", "dnorm_logits = counts * 1", ["only the local derivative",
                                                                                        "`dcounts`"]),
}


@pytest.mark.parametrize("case", EX1_MISTAKES)
def test_an_exercise_1_mistake_is_named(solution, case):
    prefix, line, words = EX1_MISTAKES[case]
    name = prefix.split()[0]
    result = grade_text(replace_line(solution, prefix, line))
    row = by_name(result)[name]
    assert row.status is Status.FAIL
    assert all(word in row.hint for word in words), row.hint
    assert [r.name for r in result.results if not r.status.passed] == [name]  # no collateral failure


def test_bessel_is_never_blamed_where_there_is_no_variance(solution):
    dlogprobs = by_name(grade_text(replace_line(
        solution, "dlogprobs =", "dlogprobs = -1.0/(n-1) * F.one_hot(Yb, num_classes=vocab_size).float()")))
    ex2 = grade_text(HEADER + "dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)) / (n-1)\n",
                     filename="ex2_cross_entropy.py", exercise=EX2)
    for row in (dlogprobs["dlogprobs"], ex2.results[0]):
        assert row.status is Status.FAIL and "n-1" in row.hint and "Bessel's correction," not in row.hint


EX2_MISTAKES = {
    "softmax over the batch": ("dlogits = (F.softmax(logits, 0) - F.one_hot(Yb, vocab_size)) / n", ["dim 0", "dim 1"]),
    "one-hot added": ("dlogits = (F.softmax(logits, 1) + F.one_hot(Yb, vocab_size)) / n", ["sign"]),
    "one-hot left out": ("dlogits = F.softmax(logits, 1) / n", ["leaves out", "F.one_hot"]),
    "mean left out": ("dlogits = F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)", ["n times", "mean"]),
}


@pytest.mark.parametrize("case", EX2_MISTAKES)
def test_an_exercise_2_mistake_is_named_in_exercise_2_words(case):
    line, words = EX2_MISTAKES[case]
    row = grade_text(HEADER + line + "\n", filename="ex2_cross_entropy.py", exercise=EX2).results[0]
    assert row.status is Status.FAIL and all(w in row.hint for w in words), row.hint
    assert "used twice" not in row.about and "cross_entropy" in row.about  # not exercise 1's chunked hint


EX3_MISTAKES = {
    "Bessel left out": ("dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - bnraw*(dhpreact*bnraw).sum(0))",
                        ["variance with 1/n", "Bessel"]),
    "Bessel inverted": ("dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - (n-1)/n*bnraw*"
                        "(dhpreact*bnraw).sum(0))", ["((n-1)/n)² times", "Bessel", "the right way up"]),
    "mean path left out": ("dhprebn = bngain*bnvar_inv/n * (n*dhpreact - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))",
                           ["path", "`bnmean`"]),
    "direct path scaled": ("dhprebn = bngain*bnvar_inv/n * (dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*"
                           "(dhpreact*bnraw).sum(0))", ["path through `bnraw`", "1/n times"]),
    "bnbias for bngain": ("dhprebn = bnbias*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*"
                          "(dhpreact*bnraw).sum(0))", ["uses `bnbias`", "`bngain`"]),
}


@pytest.mark.parametrize("case", EX3_MISTAKES)
def test_an_exercise_3_mistake_is_named(case):
    line, words = EX3_MISTAKES[case]
    row = grade_text(HEADER + line + "\n", filename="ex3_batchnorm.py", exercise=EX3).results[0]
    assert row.status is Status.FAIL and all(w in row.hint for w in words), row.hint


# --- the statement where a split gradient goes wrong ---


def _split(solution: str, first: str, second: str) -> str:
    """`dcounts` written in two statements: the first before the `dcounts_sum` line, the second where
    the one-statement answer was."""
    lines = replace_line(solution, "dcounts =", second).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("dcounts_sum ="))
    return "\n".join(lines[:at] + [first] + lines[at:]) + "\n"


def _line_of(source: str, text: str) -> int:
    return source.splitlines().index(text) + 1


@pytest.mark.parametrize("first, second, wrong", [
    ("dcounts = counts * dprobs", "dcounts += torch.ones_like(counts) * dcounts_sum", "first"),
    ("dcounts = counts_sum_inv * dprobs", "dcounts += 2 * torch.ones_like(counts) * dcounts_sum", "second"),
    ("dcounts = -counts_sum_inv * dprobs", "dcounts += torch.ones_like(counts) * dcounts_sum", "first"),
])
def test_a_split_gradient_is_reported_at_the_statement_that_goes_wrong(solution, first, second, wrong):
    source = _split(solution, first, second)
    row = by_name(grade_text(source))["dcounts"]
    assert row.status is Status.FAIL
    assert row.line == _line_of(source, first if wrong == "first" else second)


def test_a_split_gradient_that_is_right_passes(solution):
    source = _split(solution, "dcounts = counts_sum_inv * dprobs", "dcounts += torch.ones_like(counts) * dcounts_sum")
    assert all(r.status.passed for r in grade_text(source).results)


def test_an_equals_where_a_plus_equals_belongs_is_named(solution):
    second = "dcounts = torch.ones_like(counts) * dcounts_sum"
    source = _split(solution, "dcounts = counts_sum_inv * dprobs", second)
    row = by_name(grade_text(source))["dcounts"]
    assert row.status is Status.FAIL and row.line == _line_of(source, second)
    assert "`+=`" in row.hint and "`probs`" in row.hint and f"line {_line_of(source, 'dcounts = counts_sum_inv * dprobs')}" in row.hint


@pytest.mark.parametrize("wrong, line", [
    ("dlogits = F.softmax(logits, 0)", 3),
    ("dlogits[range(n), Yb] += 1", 4),
    ("dlogits /= (n-1)", 5),
])
def test_exercise_2_in_three_statements_is_reported_where_it_goes_wrong(wrong, line):
    right = ["dlogits = F.softmax(logits, 1)", "dlogits[range(n), Yb] -= 1", "dlogits /= n"]
    lines = [wrong if i == line - 3 else text for i, text in enumerate(right)]
    row = grade_text(HEADER + "\n".join(lines) + "\n", filename="ex2_cross_entropy.py", exercise=EX2).results[0]
    assert row.status is Status.FAIL and row.line == line


# --- every formula probed, however it is split ---


@pytest.mark.parametrize("lines, words", [
    ("dlogits = dnorm_logits.clone()\ndlogits -= F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes",
     ["wrong sign", "`logit_maxes`"]),
    ("dlogits = dnorm_logits.clone()\ndlogits += F.one_hot(logits.min(1).indices, num_classes=vocab_size) * dlogit_maxes",
     ["minima"]),
    ("dlogits = dnorm_logits.clone()\ndlogits += F.one_hot(Yb, num_classes=vocab_size) * dlogit_maxes", ["`Yb`"]),
])
def test_a_wrong_path_through_max_fails_however_it_is_split(solution, lines, words):
    row = by_name(grade_text(replace_line(solution, "dlogits =", lines)))["dlogits"]
    assert row.status is Status.FAIL and row.probe == "fail"
    assert all(w in row.hint for w in words) and "maths is right" not in row.hint


def test_a_helper_variable_is_probed_too(solution):
    wrong = by_name(grade_text(replace_line(solution, "db1 =", "s = dhprebn.sum(0)\ndb1 = 2 * s")))["db1"]
    assert wrong.status is Status.FAIL and "2 times" in wrong.hint and "zero" in wrong.hint
    right = by_name(grade_text(replace_line(solution, "db1 =", "s = dhprebn.sum(0)\ndb1 = s")))["db1"]
    assert right.status.passed and right.probe == "pass"


@pytest.mark.parametrize("name, line", [("db1", "db1 = torch.zeros_like(b1)"),
                                        ("dlogit_maxes", "dlogit_maxes = torch.zeros_like(logit_maxes)")])
def test_a_zero_written_for_a_zero_gradient_fails(solution, name, line):
    row = by_name(grade_text(replace_line(solution, f"{name} =", line)))[name]
    assert row.status is Status.FAIL and "zero whatever the upstream gradients are" in row.hint


def test_the_maths_is_right_only_where_the_probe_passed(solution):
    probed = by_name(grade_text(replace_line(solution, "dhpreact =", "dhpreact = (1.0 - h**2) * dh")))["dhpreact"]
    assert probed.probe == "pass" and "the maths is right" in probed.hint
    ex2 = grade_text(EX2.solution_path.read_text(), filename="ex2_cross_entropy.py", exercise=EX2).results[0]
    assert ex2.status is Status.APPROX and "the maths is right" not in (ex2.hint or "")
    hard = by_name(grade_text(replace_line(solution, "demb =", "demb = dembcat.view(-1, 3, 10)")))["demb"]
    assert hard.status is Status.FAIL and "hard-coded" in hard.hint and "maths is right" not in hard.hint


# --- texts that were wrong ---


def test_a_factor_near_one_is_not_called_one_times():
    expected = torch.randn(4, 5)
    assert factor_hint("dbnvar", expected * 1.00005, expected, 32) is None
    assert "2 times" in factor_hint("dbnvar", expected * 2, expected, 32)


def test_the_placeholder_is_named_as_such(solution):
    row = by_name(grade_text(replace_line(solution, "dbnvar =", "dbnvar = (..., 1)[0]")))["dbnvar"]
    assert row.status is Status.FAIL and "`...`, the placeholder" in row.hint and "a ellipsis" not in row.hint


@pytest.mark.parametrize("line, words", [
    ("dh = dlogits @ W2", ["`dlogits @ W2`", "(32, 27)", "(64, 27)", "transpose", "(32, 64)"]),
    ("dW1 = dhprebn @ embcat", ["(32, 64)", "(32, 30)", "transpose"]),
])
def test_a_crash_over_shapes_says_which_shapes(solution, line, words):
    name = line.split()[0]
    row = by_name(grade_text(replace_line(solution, f"{name} =", line)))[name]
    assert row.status is Status.ERROR and all(w in row.hint for w in words), row.hint


# --- whole-file failures ---


def test_a_syntax_error_is_one_sentence_and_exit_2(tmp_path):
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text("import torch\ndlogprobs = (\n")
    result = CliRunner().invoke(cli, [str(path)])
    assert result.exit_code == 2
    assert result.output.count("never closed") == 1 and "dprobs" not in result.output


def test_rows_after_a_hang_are_not_reached(tmp_path, solution):
    source = replace_line(solution, "dcounts_sum =", "while True:\n    pass")
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(source)
    done = subprocess.run([shutil.which("grade"), str(path), "--timeout", "1"], capture_output=True, text=True,
                          timeout=120)
    hang = source.splitlines().index("while True:") + 1
    assert done.returncode == 1
    assert f"not reached (time limit at line {hang})" in done.stdout
    assert "dcounts_sum_inv  exact" in done.stdout  # what ran before it keeps its verdict


def test_grade_hint_speaks_of_the_exercise_asked_for():
    runner = CliRunner()
    ex2 = runner.invoke(cli, ["hint", "dlogits", "--exercise", "ex2"])
    ex1 = runner.invoke(cli, ["hint", "dlogits"])
    assert ex2.exit_code == 0 and "cross_entropy" in ex2.output and "used twice" not in ex2.output
    assert "used twice" in ex1.output
    bad = runner.invoke(cli, ["hint", "dlogits", "--exercise", "ex9"])
    assert bad.exit_code == 2 and "no exercise 'ex9'" in bad.output


# --- exercise 4: where the chain breaks ---


def test_exercise_4_points_at_the_intermediate_where_the_chain_breaks():
    source = EX4.solution_path.read_text().replace("dhprebn = bngain", "dhprebn = 2*bngain")
    result = grade_text(source, filename="ex4_training.py", exercise=EX4)
    rows = by_name(result)
    assert rows["dhprebn"].status is Status.FAIL and "2 times" in rows["dhprebn"].hint and not rows["dhprebn"].scored
    assert rows["dembcat"].status.passed  # teacher-forced: right on the right upstream gradient
    assert rows["dW1"].status is Status.FAIL and "breaks earlier, at `dhprebn`" in rows["dW1"].hint
    failing = [r for r in result.results if not r.status.passed]
    assert min(failing, key=lambda r: r.line).name == "dhprebn"
    assert result.checks == 8 and result.passing == 5  # seven parameters and the training run are scored


# --- the error model works for any forward pass ---


def tiny_forward(x, w, b, t):
    """A forward pass no exercise has: the error model derives its gradients all the same."""
    # forward pass begins
    z = x @ w + b
    y = torch.tanh(z)
    err = (y - t)**2
    loss = err.mean()
    # forward pass ends
    return dict(z=z, y=y, err=err, loss=loss)


def test_the_error_model_derives_and_explains_a_forward_pass_it_has_never_seen():
    g = torch.Generator().manual_seed(0)
    leaves = {"x": torch.randn(8, 5, generator=g), "w": torch.randn(5, 3, generator=g),
              "b": torch.randn(3, generator=g), "t": torch.randn(8, 3, generator=g)}
    params = {k: v.clone().requires_grad_(k in ("w", "b")) for k, v in leaves.items()}
    out = tiny_forward(**params)
    for v in out.values():
        v.retain_grad()
    out["loss"].backward()
    values = {**leaves, **{k: v.detach() for k, v in out.items()}}
    scope = {"torch": torch, "F": F, **values, **{"d" + k: v.grad for k, v in out.items() if v.grad is not None}}
    derived = {}
    for tensor in ("y", "z", "w", "b"):
        found = terms(tiny_forward, tensor, values)
        derived[tensor] = eval(" + ".join(ast.unparse(t.expression) for t in found), scope)  # noqa: S307
    expected = {"y": out["y"].grad, "z": out["z"].grad, "w": params["w"].grad, "b": params["b"].grad}
    for tensor, value in derived.items():
        assert torch.allclose(value, expected[tensor], atol=1e-6), tensor
    # A student's db summed over the wrong dim: the model names it.
    context = _Context(tiny_forward, _deriver(tiny_forward, values), set(values))
    got = scope["dz"].sum(1)
    edit = explain(terms(tiny_forward, "b", values), "db", context, [Observation(scope, got)], reads={"dz"})
    assert edit is not None and edit.kind == "dim" and "summed over dim 1" in edit.says


# --- right answers written in unusual ways stay right ---


@pytest.mark.parametrize("prefix, lines", [
    ("dcounts =", "dcounts = counts_sum_inv * dprobs\ndcounts = dcounts + torch.ones_like(counts) * dcounts_sum"),
    ("dbndiff =", "dbndiff = bnvar_inv * dbnraw\ndbndiff = dbndiff + (2*bndiff) * dbndiff2"),
    ("dhpreact =", "local = torch.ones_like(h)\nlocal = local - h**2\ndhpreact = local * dh"),
    ("db1 =", "db1 = dhprebn\ndb1 = db1.sum(0)"),
    ("dhprebn =", "dhprebn = dbndiff - dbndiff.mean(0, keepdim=True)"),
    ("dhprebn =", "dhprebn = dbndiff - dbndiff.sum(0, keepdim=True) / n"),
    ("dlogits =", "dlogits = dnorm_logits - F.one_hot(logits.max(1).indices, vocab_size) * "
                  "dnorm_logits.sum(1, keepdim=True)"),
    ("dcounts =", "dcounts = counts_sum_inv * dprobs - counts_sum**-2 * (counts * dprobs).sum(1, keepdim=True)"),
])
def test_a_right_answer_in_an_unusual_form_passes(solution, prefix, lines):
    result = grade_text(replace_line(solution, prefix, lines))
    assert all(r.status.passed for r in result.results), [(r.name, r.hint) for r in result.results if not r.status.passed]
    assert result.names is None  # and no renaming is suggested for a helper


def test_exercise_3_rebuilt_from_itself_passes():
    source = HEADER + ("dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0))\n"
                       "dhprebn = dhprebn - bngain*bnvar_inv/(n-1)*bnraw*(dhpreact*bnraw).sum(0)\n")
    assert grade_text(source, filename="ex3_batchnorm.py", exercise=EX3).passed


def test_a_first_step_the_formula_does_not_show_is_not_blamed():
    # logits.exp() is not on the formula's way, but divided by its sum it is the softmax again.
    source = HEADER + ("dlogits = logits.exp()\ndlogits /= dlogits.sum(1, keepdim=True)\n"
                       "dlogits[range(n), Yb] -= 1\ndlogits /= (n - 1)\n")
    row = grade_text(source, filename="ex2_cross_entropy.py", exercise=EX2).results[0]
    assert row.status is Status.FAIL and row.line == 6 and "n-1" in row.hint


def test_an_explanation_needs_values_that_tell_it_apart(solution):
    # Dropping the path through max changes the value by rounding only: the probe, not a factor, tells.
    row = by_name(grade_text(replace_line(solution, "dlogits =", "dlogits = dnorm_logits.clone()")))["dlogits"]
    assert "not the one through `logit_maxes`" in row.hint and "times" not in row.hint
    eps = by_name(grade_text(replace_line(solution, "dbnvar =", "dbnvar = (-0.5*bnvar**-1.5) * dbnvar_inv")))["dbnvar"]
    assert eps.status is Status.FAIL and "leaves out the term `1e-05`" in eps.hint


def test_an_aliased_answer_is_not_called_rounding(solution):
    source = replace_line(solution, "dlogits =", "dlogits = dnorm_logits\n"
                          "dlogits += F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes")
    row = by_name(grade_text(source))["dnorm_logits"]
    assert row.status is Status.FAIL and "alias" in row.hint and "rounding" not in row.hint


def test_a_huge_literal_in_a_line_is_no_crash(solution):
    line = ("dlogprobs = -1.0/32 * F.one_hot(Yb, num_classes=vocab_size).float() if True else 1" + "0" * 400)
    row = by_name(grade_text(replace_line(solution, "dlogprobs =", line)))["dlogprobs"]
    assert row.status is Status.FAIL and "uses 32; use `n`" in row.hint


def test_n_minus_1_where_n_belongs_is_not_blamed_on_bessel():
    source = HEADER + ("dhprebn = bngain*bnvar_inv/(n-1) * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*"
                       "(dhpreact*bnraw).sum(0))\n")
    row = grade_text(source, filename="ex3_batchnorm.py", exercise=EX3).results[0]
    assert row.status is Status.FAIL and "divides by n-1 where n belongs" in row.hint


def averaged_forward(x, w, n):
    """A forward pass with an n-1 that is no variance: Bessel must not be named for it."""
    # forward pass begins
    z = x @ w
    m = z.sum(0) / (n - 1)
    loss = m.sum()
    # forward pass ends
    return dict(z=z, m=m, loss=loss)


def test_n_for_n_minus_1_names_bessel_only_for_a_variance():
    g = torch.Generator().manual_seed(1)
    values = {"x": torch.randn(6, 4, generator=g), "w": torch.randn(4, 3, generator=g), "n": 6}
    values.update(averaged_forward(**values))
    scope = {"torch": torch, "F": F, **values, "dm": torch.randn(3, generator=g)}
    found = terms(averaged_forward, "z", values)
    context = _Context(averaged_forward, _deriver(averaged_forward, values), set(values))
    got = scope["dm"].expand(6, 3) / 6  # the student divided by n
    edit = explain(found, "dz", context, [Observation(scope, got)], reads={"dm", "n"})
    assert edit is not None and edit.kind == "n"
    assert "uses n where" in edit.says and "Bessel" not in edit.says


def test_a_factor_of_n_minus_1_names_bessel_only_for_a_variance():
    g = torch.Generator().manual_seed(2)
    values = {"x": torch.randn(6, 4, generator=g), "w": torch.randn(4, 3, generator=g), "n": 6}
    values.update(averaged_forward(**values))
    scope = {"torch": torch, "F": F, **values, "dm": torch.randn(3, generator=g)}
    context = _Context(averaged_forward, _deriver(averaged_forward, values), set(values))
    got = scope["dm"].expand(6, 3).clone()  # the whole gradient n-1 times the right one
    edit = explain(terms(averaged_forward, "z", values), "dz", context, [Observation(scope, got)], reads={"dm", "n"})
    assert edit is not None and "n-1 times" in edit.says
    assert "Bessel" not in edit.says and "no n-1" not in edit.says
