"""The grader's judgement of a file's runs (`grader.grading.judge`: sizes, probe, error model,
branches, blame, chained run, rounding), tested in this process on runs simulated by
`tests/simulated.py`: each mistake below is a file a student could hand in, and what the grader
says of it is written out in full. One test grades the same files for real, so the simulation
cannot drift from what a student process answers."""

from __future__ import annotations

import re

import pytest

import torch

from grader.compare import Status
from grader.exercises import EX1, EX2, EX3

from conftest import SOLUTION, by_name, grade_text, replace_line
from simulated import judged

# (the line put in for the target's, the target, status, the size it fails at, the probe, the mistake, the hint)
EX1_MISTAKES = [
    ('dlogprobs = 1.0/n * F.one_hot(Yb, num_classes=vocab_size).float()',
     'dlogprobs', 'fail', None, None, 'sign',
     'a sign is wrong in your `dlogprobs`: the minus sign from `loss = -logprobs[range(n), Yb].mean()` is missing'),
    ('dprobs = probs * dlogprobs',
     'dprobs', 'fail', None, 'fail', None,
     '`dprobs` is right except in 32 of 864 entries (rows 0, 1, 2, 3, 4, 5, ...; first at [0, 0]): look at ties, an index or a special case'),
    ('dcounts_sum_inv = (counts * dprobs).sum(0, keepdim=True)',
     'dcounts_sum_inv', 'fail', None, 'fail', 'dim',
     'you summed over dim 0; `counts_sum_inv` was broadcast over the columns (dim 1) in `probs = counts * counts_sum_inv`, so sum over dim 1 (`dcounts_sum_inv` has shape (1, 27); `counts_sum_inv` has shape (32, 1))'),
    ('dcounts_sum = (counts_sum**-2) * dcounts_sum_inv',
     'dcounts_sum', 'fail', None, 'fail', 'sign',
     'a sign is wrong in your `dcounts_sum`: the minus sign from `counts_sum_inv = counts_sum ** (-1)` is missing'),
    ('dcounts = counts_sum_inv * dprobs',
     'dcounts', 'fail', None, 'fail', 'path',
     'your `dcounts` has the path through `probs` but not the one through `counts_sum`: `counts` is used in both, so its gradient is the sum of both paths'),
    ('dnorm_logits = counts * dcounts * 2',
     'dnorm_logits', 'fail', None, 'fail', 'factor',
     'your `dnorm_logits` is 2 times the right gradient'),
    ('dlogit_maxes = (-dnorm_logits).sum(1)',
     'dlogit_maxes', 'fail', None, 'pass', None,
     'the values are right; only the shape is wrong. `dlogit_maxes` has shape (32,) but `logit_maxes` has shape (32, 1): a size-1 axis is missing; sum with `keepdim=True`'),
    ('dlogits = dnorm_logits.clone()',
     'dlogits', 'fail', None, 'fail', 'path',
     'your `dlogits` has the path through `norm_logits` but not the one through `logit_maxes`: `logits` is used in both, so its gradient is the sum of both paths'),
    ('dh = dlogits @ W2',
     'dh', 'error', None, None, None,
     'RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x27 and 64x27): `dlogits @ W2` multiplies `dlogits`, (32, 27), by `W2`, (64, 27): the inner sizes (27 and 64) must be equal; transpose an operand or swap the order of the operands, as the shapes decide. `dh` must be (32, 64), like `h`'),
    ('dW2 = h.T @ dlogits / n',
     'dW2', 'fail', None, 'fail', 'factor',
     'your `dW2` is 1/n times the right gradient: the loss is a mean over the n examples of the batch, which puts one 1/n in every gradient'),
    ('db2 = dlogits.sum(1)',
     'db2', 'fail', None, 'fail', 'dim',
     'you summed over dim 1; `b2` was broadcast over the batch (dim 0) in `logits = h @ W2 + b2`, so sum over dim 0 (`db2` has shape (32,); `b2` has shape (27,))'),
    ('dhpreact = (1.0 - h**2) * dh',
     'dhpreact', 'approx', None, 'pass', None,
     "the maths is right: in float64 your line matches; the difference is floating-point rounding (PyTorch's tanh backward computes 1 - h*h with a fused multiply-add, as torch.addcmul does)"),
    ('dhpreact = (1.0 + h**2) * dh',
     'dhpreact', 'fail', None, 'fail', 'sign',
     'a sign is wrong in your `dhpreact`: `h ** 2` enters the gradient of `h = torch.tanh(hpreact)` with the opposite sign'),
    ('dbngain = (bnraw * dhpreact).sum(0)',
     'dbngain', 'fail', None, 'pass', None,
     'the values are right; only the shape is wrong. `dbngain` has shape (64,) but `bngain` has shape (1, 64): a size-1 axis is missing; sum with `keepdim=True`'),
    ('dbnbias = dhpreact.sum(1, keepdim=True)',
     'dbnbias', 'fail', None, 'fail', 'dim',
     'you summed over dim 1; `bnbias` was broadcast over the batch (dim 0) in `hpreact = bngain * bnraw + bnbias`, so sum over dim 0 (`dbnbias` has shape (32, 1); `bnbias` has shape (1, 64))'),
    ('dbnraw = bngain * dh',
     'dbnraw', 'fail', None, 'fail', 'tensor',
     'your `dbnraw` reads `dh` where the chain rule needs `dhpreact`; so your `dbnraw` uses `dh` where the chain rule through `hpreact = bngain * bnraw + bnbias` needs `dhpreact`, the gradient of `hpreact`'),
    ('dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True) * 32',
     'dbnvar_inv', 'fail', None, 'fail', None,
     '`dbnvar_inv` is n times the right gradient'),
    ('dbnvar = (0.5*(bnvar + 1e-5)**-1.5) * dbnvar_inv',
     'dbnvar', 'fail', None, 'fail', 'sign',
     'a sign is wrong in your `dbnvar`: the minus sign from `bnvar_inv = (bnvar + 1e-05) ** (-0.5)` is missing'),
    ('dbnvar = (-0.5*bnvar**-1.5) * dbnvar_inv',
     'dbnvar', 'fail', None, 'pass', 'term',
     'your `dbnvar` leaves out the term `1e-05` of the gradient of `bnvar_inv = (bnvar + 1e-05) ** (-0.5)`'),
    ('dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar',
     'dbndiff2', 'fail', None, 'fail', 'n',
     "your `dbndiff2` matches the variance with 1/n: the forward pass divides by n-1 (Bessel's correction, `bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdim=True)`)"),
    ('dbndiff2 = (1.0/31)*torch.ones_like(bndiff2) * dbnvar',
     'dbndiff2', 'fail', 'other sizes', 'pass', None,
     "right at the lecture's sizes but not at other sizes (other sizes: batch 13, block_size 4, n_embd 7, n_hidden 48, seed 1337, names without q, x, z): a size is hard-coded: line 37 uses 31; use `n-1`"),
    ('dbndiff = bnvar_inv * dbnraw',
     'dbndiff', 'fail', None, 'fail', 'path',
     'your `dbndiff` has the path through `bnraw` but not the one through `bndiff2`: `bndiff` is used in both, so its gradient is the sum of both paths'),
    ('dbndiff = bnvar_inv * dbnraw + bndiff * dbndiff2',
     'dbndiff', 'fail', None, 'fail', 'factor',
     'in your `dbndiff`, the factor 2 in the path through `bndiff2` is halved: a constant factor is off (the power rule gives p*x**(p-1))'),
    ('dbnmeani = (-dbndiff).sum(0)',
     'dbnmeani', 'fail', None, 'pass', None,
     'the values are right; only the shape is wrong. `dbnmeani` has shape (64,) but `bnmeani` has shape (1, 64): a size-1 axis is missing; sum with `keepdim=True`'),
    ('dhprebn = dbndiff',
     'dhprebn', 'fail', None, 'fail', 'path',
     'your `dhprebn` has the path through `bndiff` but not the one through `bnmeani`: `hprebn` is used in both, so its gradient is the sum of both paths'),
    ('dembcat = dhprebn @ W1',
     'dembcat', 'error', None, None, None,
     'RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x64 and 30x64): `dhprebn @ W1` multiplies `dhprebn`, (32, 64), by `W1`, (30, 64): the inner sizes (64 and 30) must be equal; transpose an operand or swap the order of the operands, as the shapes decide. `dembcat` must be (32, 30), like `embcat`'),
    ('dW1 = embcat.T @ dhprebn * 2',
     'dW1', 'fail', None, 'fail', 'factor',
     'your `dW1` is 2 times the right gradient'),
    ('db1 = torch.zeros_like(b1)',
     'db1', 'fail', None, 'fail', None,
     'your `db1` is zero whatever the upstream gradients are; it is right here only because the true gradient is zero. Its formula reads `dhprebn`'),
    ('demb = dembcat.view(32, 3, 10)',
     'demb', 'fail', 'other sizes', 'pass', None,
     "right at the lecture's sizes but not at other sizes (other sizes: batch 13, block_size 4, n_embd 7, n_hidden 48, seed 1337, names without q, x, z): a size is hard-coded: line 48 uses 3; use `block_size`; line 48 uses 10; use `n_embd`; line 48 uses 32; use `n`"),
    ('dC = torch.zeros_like(C)',
     'dC', 'fail', None, None, None,
     '`dC` is all zeros; was an accumulation (`+=`) overwritten?'),
    ('dC = torch.zeros_like(C).index_add_(0, Xb.view(-1), -demb.view(-1, n_embd))',
     'dC', 'fail', None, 'fail', 'sign',
     'your `dC` has the right size but the opposite sign'),
    ('dh = dlogits @ W2.T + undefined_name',
     'dh', 'error', None, None, None,
     "NameError: name 'undefined_name' is not defined"),
    ('dh = dlogits @ W1.T',
     'dh', 'error', None, None, None,
     'RuntimeError: mat1 and mat2 shapes cannot be multiplied (32x27 and 64x30): `dlogits @ W1.T` multiplies `dlogits`, (32, 27), by `W1.T`, (64, 30): the inner sizes (27 and 64) must be equal; transpose an operand or swap the order of the operands, as the shapes decide. `dh` must be (32, 64), like `h`'),
    ('dcounts = counts_sum_inv * dprobs\ndcounts = torch.ones_like(counts) * dcounts_sum',
     'dcounts', 'fail', None, 'fail', 'accumulate',
     'line 17 assigns `dcounts` with `=`, which throws away the path through `probs` that line 16 computed: use `+=` to add the paths up'),
    ('dhpreact = (1.0 + h**2) * (dlogits @ W2.T)',
     'dhpreact', 'fail', None, 'fail', 'sign',
     'your `dhpreact` reads `dlogits` where the chain rule needs `dh`; so a sign is wrong in your `dhpreact`: `h ** 2` '
     'enters the gradient of `h = torch.tanh(hpreact)` with the opposite sign'),
    ('s = dhprebn.sum(0)\ndb1 = s * 2',
     'db1', 'fail', None, 'fail', 'factor',
     'your `db1` is 2 times the right gradient (it looked right here only because the true gradient is zero: the '
     'grader re-ran your line on random upstream gradients)'),
    ('dcounts = counts_sum_inv * dprobs\ndcounts += torch.ones_like(counts) * dcounts_sum * 2',
     'dcounts', 'fail', None, 'fail', 'factor',
     'in your `dcounts`, the path through `counts_sum` is 2 times what it should be: a constant factor is off'),
    ('dlogits = dnorm_logits + dlogit_maxes',
     'dlogits', 'fail', None, 'fail', 'factor',
     'your `dlogits` misses the factor `F.one_hot(logits.max(1).indices, num_classes=vocab_size)` of the gradient of '
     '`logit_maxes = logits.max(1, keepdim=True).values`'),
    ('dbnraw = bngain * dhpreact + bnbias',
     'dbnraw', 'fail', None, 'fail', None, '2048 of 2048 entries of `dbnraw` are wrong'),
    ('dhprebn = dbndiff + dbnmeani',
     'dhprebn', 'fail', None, 'fail', 'factor',
     'your `dhprebn` misses the factor `torch.ones_like(hprebn) * (1 / n)` of the gradient of '
     '`bnmeani = 1 / n * hprebn.sum(0, keepdim=True)`'),
    ('dnorm_logits = counts * (counts_sum_inv * dprobs)',
     'dnorm_logits', 'fail', None, 'fail', 'term',
     'your `dnorm_logits` reads `dprobs` where the chain rule needs `dcounts`; so your `dnorm_logits` leaves out the '
     'term `torch.ones_like(counts) * (-1 * counts_sum ** (-2) * (counts * dprobs).sum(1, keepdim=True))` of the '
     'gradient of `counts = norm_logits.exp()`'),
    ('dbndiff = bnvar_inv * (bngain * dhpreact)',
     'dbndiff', 'fail', None, 'fail', 'path',
     'your `dbndiff` reads `dhpreact` where the chain rule needs `dbndiff2` and `dbnraw`; so your `dbndiff` has the path '
     'through `bnraw` but not the one through `bndiff2`: `bndiff` is used in both, so its gradient is the sum of both '
     'paths'),
    ('dlogit_maxes = torch.zeros_like(logit_maxes)',
     'dlogit_maxes', 'fail', 'other sizes', 'fail', None,
     'your `dlogit_maxes` is zero whatever the upstream gradients are; it is right here only because the true gradient '
     'is zero. Its formula reads `dnorm_logits`'),
]
EX2_SOLUTION, EX3_SOLUTION = EX2.solution_path.read_text(), EX3.solution_path.read_text()
OTHER_MISTAKES = [
    (replace_line(EX2_SOLUTION, "dlogits =", "dlogits = F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)"), EX2,
     "dlogits", "fail", None, None, "factor",
     "your `dlogits` is n times the right gradient: the loss is a mean over the n examples of the batch, which puts "
     "one 1/n in every gradient"),
    (replace_line(EX2_SOLUTION, "dlogits =", "dlogits = (F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)) / 32"), EX2,
     "dlogits", "fail", "other sizes", None, None,
     "right at the lecture's sizes but not at other sizes (other sizes: batch 13, block_size 4, n_embd 7, n_hidden 48, "
     "seed 1337, names without q, x, z): a size is hard-coded: line 12 uses 32; use `n`"),
    (EX3_SOLUTION.replace("n/(n-1)*bnraw", "bnraw"), EX3, "dhprebn", "fail", None, "fail", "n",
     "your `dhprebn` matches the variance with 1/n: the forward pass divides by n-1 (Bessel's correction, "
     "`bnvar = hprebn.var(0, keepdim=True, unbiased=True)`)"),
    (EX3_SOLUTION, EX3, "dhprebn", "approx", None, "pass", None,
     "the maths is right: in float64 your line matches; the difference is floating-point rounding"),
    (EX2_SOLUTION, EX2, "dlogits", "approx", None, None, None,
     "in float64 your line matches here; the difference is floating-point rounding"),
]


def _source(line: str, target: str) -> str:
    return replace_line(SOLUTION, target + " =", line)


def _said(result) -> tuple:
    return result.status.value, result.failed_at, result.probe, result.mistake, result.hint


@pytest.mark.parametrize("line, target, status, failed_at, probe, mistake, hint", EX1_MISTAKES,
                         ids=[case[1] + "-" + str(i) for i, case in enumerate(EX1_MISTAKES)])
def test_each_mistake_is_judged_at_its_line_and_only_there(line, target, status, failed_at, probe, mistake, hint):
    source = _source(line, target)
    results = judged(source, EX1)
    assert _said(results[target]) == (status, failed_at, probe, mistake, hint)
    # At the statement that went wrong: for a gradient written in two statements, the second.
    written = [i for i, text in enumerate(source.splitlines(), start=1) if re.match(rf"{target} \+?= ", text)]
    assert results[target].line == written[-1]
    assert all(r.status is Status.EXACT for name, r in results.items() if name != target)
    assert all(r.probe == "pass" for name, r in results.items() if name not in (target, "dlogprobs"))


@pytest.mark.parametrize("source, exercise, target, status, failed_at, probe, mistake, hint", OTHER_MISTAKES,
                         ids=["ex2-times-n", "ex2-hard-coded", "ex3-bessel", "ex3-solution", "ex2-solution"])
def test_exercises_2_and_3_are_judged_on_their_inlined_formulas(source, exercise, target, status, failed_at, probe,
                                                                  mistake, hint):
    assert _said(judged(source, exercise)[target]) == (status, failed_at, probe, mistake, hint)


@pytest.mark.parametrize("target, lines", [
    ("db1", "s = dhprebn.sum(0)\ndb1 = s"),  # a helper
    ("dcounts", "dcounts = torch.zeros_like(counts)\ndcounts += counts_sum_inv * dprobs\n"
                "dcounts += torch.ones_like(counts) * dcounts_sum"),  # a gradient summed in three statements
    ("dhpreact", "dhpreact = dh * torch.addcmul(torch.ones_like(h), h, h, value=-1)\n"
                 "dhpreact = dhpreact.clone()"),
])
def test_right_answers_written_another_way_are_exact(target, lines):
    results = judged(_source(lines, target), EX1)
    assert {r.status for r in results.values()} == {Status.EXACT}, results[target]


def test_a_gradient_split_over_statements_is_blamed_where_it_first_goes_wrong():
    # The first of two statements is off (twice the path through counts_sum); the second is right.
    source = _source("dcounts = torch.ones_like(counts) * dcounts_sum * 2\ndcounts += counts_sum_inv * dprobs", "dcounts")
    result = judged(source, EX1)["dcounts"]
    first = next(i for i, text in enumerate(source.splitlines(), start=1) if text.startswith("dcounts ="))
    assert (result.status, result.line, result.mistake) == (Status.FAIL, first, "factor")
    assert result.hint == "in your `dcounts`, the path through `counts_sum` is 2 times what it should be: a constant factor is off"


def test_the_solution_is_exact_everywhere_and_its_chain_holds():
    results = judged(SOLUTION, EX1)
    assert {r.status for r in results.values()} == {Status.EXACT}
    assert {r.chained for r in results.values()} == {"exact"}
    # Every line is re-run on random upstream gradients, and passes; but dlogprobs, which reads only the loss's.
    assert [name for name, r in results.items() if r.probe != "pass"] == ["dlogprobs"]


def test_a_broken_chain_is_pointed_at_where_it_breaks():
    # dcounts misses a path; the lines after it are right on their own, but not on the student's own values.
    results = judged(_source("dcounts = counts_sum_inv * dprobs", "dcounts"), EX1)
    assert results["dcounts"].chained == "fail"
    assert results["dnorm_logits"].status is Status.EXACT and results["dnorm_logits"].chained == "fail"
    assert results["dnorm_logits"].hint == ("correct on its own; with your own upstream gradients it is off: your chain "
                                            "breaks earlier, at `dcounts`")
    assert results["dlogprobs"].chained == "exact" and results["dlogprobs"].hint is None


@pytest.mark.slow
def test_the_simulation_answers_as_the_student_process_does():
    cases = [(_source(line, target), EX1) for line, target, *_ in EX1_MISTAKES]
    cases.append((_source("dcounts = torch.ones_like(counts) * dcounts_sum * 2\ndcounts += counts_sum_inv * dprobs",
                          "dcounts"), EX1))
    cases += [(source, exercise) for source, exercise, *_ in OTHER_MISTAKES] + [(SOLUTION, EX1)]
    for source, exercise in cases:
        real = by_name(grade_text(source, exercise=exercise, filename=exercise.stub_path.name))
        simulated = judged(source, exercise)
        for name, result in real.items():
            assert (*_said(result), result.line, result.chained) == (
                *_said(simulated[name]), simulated[name].line, simulated[name].chained), (source, name)


def test_an_answer_changed_in_place_later_fails_with_the_line_that_changed_it():
    from grader import diagnose
    from grader.compare import TensorResult
    from grader.execution import Run

    results = (TensorResult("dbndiff", "bndiff", Status.EXACT), TensorResult("dhprebn", "hprebn", Status.FAIL, hint="h"),
               TensorResult("dW1", "W1", Status.APPROX))
    out = diagnose.apply_mutations(results, Run(mutated={"dbndiff": 41, "dhprebn": 41}))
    said = ("line 41 changed `dbndiff` in place after it was answered, through an alias (a name assigned `dbndiff` "
            "itself, not a copy, then changed with `+=` or the like), so your `dbndiff` no longer holds the gradient. "
            "Use `.clone()` when you copy a gradient")
    assert out[0] == TensorResult("dbndiff", "bndiff", Status.FAIL, hint=said, warning=said, mistake="alias")
    assert out[1].status is Status.FAIL and out[1].hint == "h" and out[1].warning.startswith("line 41 changed `dhprebn`")
    assert out[2] == results[2]


def test_a_line_that_reached_for_autograd_fails_whatever_its_value():
    from grader import diagnose
    from grader.compare import TensorResult
    from grader.execution import Answer, Run

    results = (TensorResult("dh", "h", Status.EXACT, maxdiff=0.0), TensorResult("dW2", "W2", Status.EXACT, maxdiff=0.0))
    run = Run(answers={"dh": Answer("dh", kind="error", message="uses `backward`", policy="autograd"),
                       "dW2": Answer("dW2")})
    out = diagnose.apply_policy(results, run)
    assert out[0] == TensorResult("dh", "h", Status.FAIL, hint="uses `backward`", policy="autograd", maxdiff=None)
    assert out[1] == results[1]


@pytest.mark.parametrize("changes, near", [
    ({"status": Status.APPROX}, True),
    ({"status": Status.APPROX, "probe": "fail"}, False),
    ({"status": Status.EXACT}, False),
    ({}, True),  # a fail by 5e-5, nothing else said of it
    ({"maxdiff": 1e-4}, False), ({"maxdiff": None}, False), ({"policy": "autograd"}, False),
    ({"failed_at": "small"}, False), ({"mistake": "sign"}, False), ({"got_shape": (4, 3)}, False),
])
def test_a_near_miss_is_a_pass_not_exact_or_a_fail_by_less_than_1e_4(changes, near):
    from dataclasses import replace

    from grader import diagnose
    from grader.compare import TensorResult

    fail = TensorResult("dx", "x", Status.FAIL, maxdiff=5e-5, expected_shape=(3, 4), got_shape=(3, 4))
    assert diagnose.is_near_miss(replace(fail, **changes)) is near


def test_a_line_right_at_the_lectures_sizes_only_names_its_literal():
    results = judged(_source("dbndiff2 = (1/31.0)*torch.ones_like(bndiff2) * dbnvar", "dbndiff2"), EX1)
    assert results["dbndiff2"].failed_at == "other sizes" and results["dbndiff2"].hint.endswith("uses 31; use `n-1`")
    results = judged(_source("dbndiff2 = (1/(n-1))*torch.ones_like(bndiff2) * dbnvar * 7 / 7.5 * 7.5 / 7", "dbndiff2"), EX1)
    assert results["dbndiff2"].status.passed  # literals that are not the lecture's sizes are not blamed


def test_the_probe_tells_a_right_formula_from_one_right_only_on_these_values():
    from grader import diagnose

    expected = torch.linspace(-2, 2, 12).reshape(3, 4)
    assert diagnose._probe_matches(expected * (1 + 5e-5), expected)
    assert not diagnose._probe_matches(expected * (1 + 5e-4), expected)
    assert diagnose._probe_matches(expected.reshape(12), expected)  # the shape is judged elsewhere
    assert not diagnose._probe_matches(expected.reshape(12)[:6], expected)  # not even as many entries
    assert not diagnose._probe_matches(expected.long(), expected)
    zero = torch.zeros(3, 4)
    assert diagnose._probe_matches(zero + 1e-18, zero) and not diagnose._probe_matches(zero + 1e-16, zero)


def test_a_near_miss_that_float64_gets_right_is_called_rounding():
    from grader import diagnose
    from grader.compare import Settings, TensorResult
    from grader.execution import Answer, Run
    from grader.network import reference

    ref64 = reference(EX1.configs[0], torch.float64)
    right = {name: Answer(name, value=ref64.gradients[name[1:]].clone()) for name in ("dh", "dhpreact", "dW2", "db2")}
    wrong = dict(right, db2=Answer("db2", value=ref64.gradients["b2"] * 1.001))
    results = (
        TensorResult("dh", "h", Status.FAIL, maxdiff=5e-5, expected_shape=(32, 64), got_shape=(32, 64), hint="off"),
        TensorResult("dhpreact", "hpreact", Status.APPROX, maxdiff=1e-9, probe="pass"),
        TensorResult("dW2", "W2", Status.APPROX, maxdiff=1e-9, hint="said already"),
        TensorResult("db2", "b2", Status.APPROX, maxdiff=1e-9),
    )
    out = {r.name: r for r in diagnose.rounding_hints(results, EX1, ref64, Run(answers=wrong), Settings())}
    assert out["dh"].status is Status.FAIL and out["dh"].hint == (
        "off. But in float64 your line matches here; the difference is floating-point rounding")
    assert out["dhpreact"].hint == ("the maths is right: in float64 your line matches; the difference is floating-point "
                                    "rounding (PyTorch's tanh backward computes 1 - h*h with a fused multiply-add, as "
                                    "torch.addcmul does)")
    assert out["dW2"].hint == "said already" and out["db2"].hint is None  # db2 is off in float64 too
    bare = diagnose.rounding_hints((replace_hint(results[0], None),), EX1, ref64, Run(answers=right), Settings())
    assert bare[0].hint == "in float64 your line matches here; the difference is floating-point rounding"


def replace_hint(result, hint):
    from dataclasses import replace

    return replace(result, hint=hint)
