"""The verdict on one answer, called directly: each branch of `compare` and each hint it gives, with
an answer that must pass and one that must not. (The grading tests reach these through a student
process; these say exactly which rule a change broke, in milliseconds.)"""

from __future__ import annotations

import json
import math

import pytest
import torch

from grader.compare import (
    FileResult, Settings, Status, TensorResult, broadcast_shape, classic_factors, compare, factor_hint, load_settings,
    shape_hint, shape_text, value_hint,
)
from grader.execution import Answer

from conftest import BAD_SETTINGS

EXPECTED = torch.linspace(-1.0, 1.0, 12).reshape(3, 4)


def verdict(value=None, expected=EXPECTED, settings=Settings(), n=None, **answer) -> TensorResult:
    return compare(Answer(name="dx", line=7, value=value, **answer), expected, "x", settings=settings, n=n)


def test_an_answer_that_is_the_reference_is_exact_and_says_where():
    same = verdict(EXPECTED.clone())
    assert (same.status, same.maxdiff, same.hint) == (Status.EXACT, 0.0, None)
    assert (same.name, same.tensor, same.line, same.expected_shape, same.got_shape) == ("dx", "x", 7, (3, 4), (3, 4))
    itself = verdict(EXPECTED)  # the reference object itself, as an answer equal to the bit arrives
    assert (itself.status, itself.maxdiff) == (Status.EXACT, 0.0)


def test_blank_missing_error_and_other_answers():
    assert verdict(kind="blank").status is Status.BLANK
    missing = verdict(kind="missing")
    assert missing.status is Status.MISSING and missing.hint == "`dx` is never assigned"
    error = verdict(kind="error", message="NameError: foo")
    assert error.status is Status.ERROR and error.hint == "NameError: foo"
    other = verdict(kind="other", description="a float")
    assert other.status is Status.FAIL and other.hint == "`dx` is a float, not a tensor; build it with torch operations"
    assert verdict(None).status is Status.FAIL  # a tensor answer that never arrived
    assert verdict(EXPECTED, kind="other", description="a list").status is Status.FAIL  # whatever came with it


@pytest.mark.parametrize("scale, status", [(1 + 5e-6, Status.APPROX), (1 + 5e-5, Status.FAIL)])
def test_rtol_decides_a_relative_difference(scale, status):
    result = verdict(EXPECTED * scale)
    assert result.status is status
    assert result.maxdiff == pytest.approx((EXPECTED * scale - EXPECTED).abs().max().item())


@pytest.mark.parametrize("offset, status", [(5e-9, Status.APPROX), (5e-8, Status.FAIL)])
def test_atol_decides_an_absolute_difference_near_zero(offset, status):
    zero = torch.zeros(3, 4)
    assert verdict(zero + offset, expected=zero).status is status


def test_a_settings_tolerance_moves_the_line_both_ways():
    off = EXPECTED * (1 + 5e-5)
    assert verdict(off, settings=Settings(rtol=1e-4)).status is Status.APPROX
    assert verdict(EXPECTED * (1 + 5e-6), settings=Settings(rtol=1e-6)).status is Status.FAIL
    zero = torch.zeros(3, 4)
    assert verdict(zero + 5e-8, expected=zero, settings=Settings(atol=1e-7)).status is Status.APPROX
    assert verdict(zero + 5e-9, expected=zero, settings=Settings(atol=1e-9)).status is Status.FAIL


def test_nan_and_inf_fail_and_are_counted():
    bad = EXPECTED.clone()
    bad[0, 0], bad[1, 1], bad[2, 2] = math.nan, math.nan, math.inf
    result = verdict(bad)
    assert result.status is Status.FAIL and result.maxdiff == math.inf
    assert result.hint == "`dx` has 2 NaN and 1 infinite values; look for a division by zero or a log of 0"
    only_inf = EXPECTED.clone()
    only_inf[0, 0] = -math.inf
    assert verdict(only_inf).hint == "`dx` has 1 infinite values; look for a division by zero or a log of 0"
    only_nan = EXPECTED.clone()
    only_nan[2, 3] = math.nan
    assert verdict(only_nan).hint == "`dx` has 1 NaN values; look for a division by zero or a log of 0"


def test_a_dtype_other_than_the_tensors_fails_with_both_named():
    result = verdict(EXPECTED.double())
    assert result.status is Status.FAIL
    assert result.hint == "`dx` has dtype float64 but `x` is float32; a gradient has the dtype of its tensor"


def test_the_shape_gate_fails_right_values_in_the_wrong_shape_unless_told_to_warn():
    flat = EXPECTED.reshape(12)
    gated = verdict(flat)
    assert gated.status is Status.FAIL and gated.hint == (
        "the values are right; only the shape is wrong. `dx` has shape (12,) but `x` has shape (3, 4): "
        "the same number of entries in another arrangement; check your `view`/`reshape`")
    # "Right" is right within the settings' tolerances.
    loose = Settings(rtol=1e-3)
    assert "values are right" in verdict((EXPECTED * 1.0005).reshape(12), settings=loose).hint
    zero = torch.zeros(3, 4)
    near_zero = (zero + 5e-4).reshape(12)
    assert "values are right" in verdict(near_zero, expected=zero, settings=Settings(atol=1e-3)).hint
    assert "values are right" not in verdict(near_zero, expected=zero).hint
    assert gated.got_shape == (12,)
    warned = verdict(flat, settings=Settings(shape_gate="warn"))
    assert warned.status is Status.APPROX and warned.maxdiff == 0.0
    assert warned.warning.startswith("the values are right but the shape is not: `dx` has shape (12,)")
    # Wrong values in the wrong shape fail either way, without "the values are right".
    for settings in (Settings(), Settings(shape_gate="warn")):
        wrong = verdict(flat * 2, settings=settings)
        assert wrong.status is Status.FAIL and "values are right" not in wrong.hint
    # The same count of entries but another dtype is not "right values".
    assert "values are right" not in verdict(flat.double()).hint
    # Values just outside the tolerance, reshaped: not right either.
    assert "values are right" not in verdict((EXPECTED * (1 + 5e-5)).reshape(12)).hint


def test_shape_hints_name_the_likely_mistake():
    assert shape_text((32, 27)) == "(32, 27)" and shape_text((64,)) == "(64,)" and shape_text(()) == "()"
    assert shape_hint("dW", "W", (30, 64), (64, 30)).endswith(
        "that is the transpose; did you mean `.T`, or the operands of `@` the other way round?")
    assert shape_hint("db", "b", (1, 64), (64,)).endswith("a size-1 axis is missing; sum with `keepdim=True`")
    assert shape_hint("db", "b", (64,), (1, 64)).endswith(
        "it has an extra size-1 axis; drop `keepdim=True` or the extra axis")
    summed = shape_hint("dbngain", "bngain", (1, 64), (32, 64))
    assert summed == ("`dbngain` has shape (32, 64) but `bngain` has shape (1, 64): `bngain` was broadcast to "
                      "(32, 64) in the forward pass, so its gradient must be summed over dim 0 with `keepdim=True`")
    lower = shape_hint("db", "b", (64,), (32, 64))
    assert lower.endswith("so its gradient must be summed over dim 0")
    # Only the axes that were broadcast: here the first, not the one that is 1 in both.
    assert shape_hint("dg", "g", (1, 1, 3), (5, 1, 3)).endswith("must be summed over dim 0 with `keepdim=True`")
    assert shape_hint("dg", "g", (1, 3, 1), (1, 3, 4)).endswith("must be summed over dim 2 with `keepdim=True`")
    both = shape_hint("dc", "c", (1, 1), (5, 7))
    assert "summed over dim 0, 1 with `keepdim=True`" in both
    assert shape_hint("dx", "x", (4, 6), (3, 8)).endswith(
        "the same number of entries in another arrangement; check your `view`/`reshape`")
    assert shape_hint("dx", "x", (4, 6), (5,)).endswith("a gradient always has the shape of its tensor")


def test_broadcast_shape_follows_the_rules():
    assert broadcast_shape((1, 64), (32, 64)) == (32, 64)
    assert broadcast_shape((32, 1), (27,)) == (32, 27)
    assert broadcast_shape((3,), (4,)) is None
    assert broadcast_shape((2, 3), (2, 3)) == (2, 3)
    assert broadcast_shape((5, 1, 3), (4, 1)) == (5, 4, 3)


def test_classic_factors_for_a_batch_of_n():
    assert classic_factors(None) == {"2": 2.0, "0.5 (1/2)": 0.5}
    factors = classic_factors(32)
    assert factors["n"] == 32.0 and factors["1/n"] == 1 / 32 and factors["n/(n-1)"] == 32 / 31
    assert factors["(n-1)/n"] == 31 / 32 and factors["n-1"] == 31.0 and factors["1/(n-1)"] == 1 / 31
    assert "n-1" not in classic_factors(1) and classic_factors(1)["n"] == 1.0
    assert classic_factors(2)["n-1"] == 1.0 and classic_factors(2)["n/(n-1)"] == 2.0


@pytest.mark.parametrize("factor, said", [
    (-1.0, "`dx` has the right size but the opposite sign"),
    (2.0, "`dx` is 2 times the right gradient"),
    (0.5, "`dx` is 0.5 (1/2) times the right gradient"),
    (32.0, "`dx` is n times the right gradient"),
    (1 / 32, "`dx` is 1/n times the right gradient"),
    (32 / 31, "`dx` is n/(n-1) times the right gradient"),
    (31 / 32, "`dx` is (n-1)/n times the right gradient"),
    (-0.5, "`dx` is -0.5 times the right gradient: a constant factor is off"),
    (0.50015, "`dx` is 0.5002 times the right gradient: a constant factor is off"),
    (3.7, "`dx` is 3.7 times the right gradient: a constant factor is off"),
])
def test_a_constant_factor_is_named(factor, said):
    assert factor_hint("dx", EXPECTED * factor, EXPECTED, 32) == said
    assert value_hint("dx", EXPECTED * factor, EXPECTED, 1e-5, 1e-8, 32) == said


def test_a_factor_is_named_through_rounding_noise():
    # Twice the gradient, each entry off by up to 5e-5 relative (a sum taken in another order).
    wobble = 1 + 5e-5 * torch.tensor([1.0, -1.0, 0.5, -0.5] * 3).reshape(3, 4)
    assert factor_hint("dx", EXPECTED * 2 * wobble, EXPECTED, 32) == "`dx` is 2 times the right gradient"
    # n times, 1e-5 off: within 1e-4 of n relative to n, not to 1.
    assert factor_hint("dx", EXPECTED * 32 * (1 + 1e-5), EXPECTED, 32) == "`dx` is n times the right gradient"
    # A gradient of small entries (its squares sum to less than 1) has factors too.
    assert factor_hint("dx", EXPECTED * 0.01 * 2, EXPECTED * 0.01, 32) == "`dx` is 2 times the right gradient"
    # Noise on an entry that is zero in truth, small beside the largest entry (10): still twice.
    tens = torch.tensor([[10.0, 0.0], [-4.0, 2.5]])
    noisy = tens * 2
    noisy[0, 1] = 5e-7
    assert factor_hint("dx", noisy, tens, 32) == "`dx` is 2 times the right gradient"


def test_no_factor_is_named_when_there_is_none():
    assert factor_hint("dx", EXPECTED * 1.0005, EXPECTED, 32) is None  # the same size
    assert factor_hint("dx", torch.ones(3, 4), torch.zeros(3, 4), 32) is None  # nothing to scale
    noisy = EXPECTED * 2
    noisy[0, 0] += 0.5
    assert factor_hint("dx", noisy, EXPECTED, 32) is None
    assert factor_hint("dx", EXPECTED * 31, EXPECTED, None) == "`dx` is 31 times the right gradient: a constant factor is off"


def test_value_hints_for_zeros_and_for_a_few_wrong_entries():
    assert value_hint("dx", torch.zeros(3, 4), EXPECTED, 1e-5, 1e-8) == (
        "`dx` is all zeros; was an accumulation (`+=`) overwritten?")
    big = torch.linspace(1.0, 2.0, 400).reshape(40, 10)
    few = big.clone()
    few[3, 2] += 1.0
    few[17, 0] -= 1.0
    assert value_hint("dx", few, big, 1e-5, 1e-8) == (
        "`dx` is right except in 2 of 400 entries (rows 3, 17; first at [3, 2]): look at ties, an index or a special case")
    one = big.clone()
    one[5, 5] = 0.0
    assert "in 1 of 400 entries (row 5; first at [5, 5])" in value_hint("dx", one, big, 1e-5, 1e-8)
    many = big.clone()
    many[:30] += torch.rand(30, 10) + 0.1
    assert value_hint("dx", many, big, 1e-5, 1e-8) == "300 of 400 entries of `dx` are wrong"
    # "A few" is up to a twentieth of the entries, and never fewer than three; six rows are listed.
    twenty, more = big.clone(), big.clone()
    twenty.view(-1)[:20] += 1.0
    more.view(-1)[:21] += 1.0
    assert value_hint("dx", twenty, big, 1e-5, 1e-8).startswith(
        "`dx` is right except in 20 of 400 entries (rows 0, 1; first at [0, 0])")
    assert value_hint("dx", more, big, 1e-5, 1e-8) == "21 of 400 entries of `dx` are wrong"
    six = big.clone()
    six[[1, 2, 3, 4, 5, 6], 0] += 1.0
    assert "(rows 1, 2, 3, 4, 5, 6; first at [1, 0])" in value_hint("dx", six, big, 1e-5, 1e-8)
    line = torch.linspace(1.0, 2.0, 100)
    two = line.clone()
    two[[3, 7]] += 1.0
    assert value_hint("dx", two, line, 1e-5, 1e-8) == (
        "`dx` is right except in 2 of 100 entries (rows 3, 7; first at [3]): look at ties, an index or a special case")
    seven = big.clone()
    seven[[1, 2, 3, 4, 5, 6, 7], 0] += 1.0
    assert "(rows 1, 2, 3, 4, 5, 6, ...; first at [1, 0])" in value_hint("dx", seven, big, 1e-5, 1e-8)
    small = torch.linspace(1.0, 2.0, 12).reshape(3, 4)
    three, four = small.clone(), small.clone()
    three.view(-1)[[0, 5, 10]] += 1.0
    four.view(-1)[[0, 3, 5, 10]] += 1.0
    assert value_hint("dx", three, small, 1e-5, 1e-8).startswith("`dx` is right except in 3 of 12 entries (rows 0, 1, 2;")
    assert value_hint("dx", four, small, 1e-5, 1e-8) == "4 of 12 entries of `dx` are wrong"
    # A scalar has no rows to name.
    assert value_hint("dx", torch.tensor(3.0), torch.tensor(1.5), 1e-5, 1e-8) == "`dx` is 2 times the right gradient"
    assert value_hint("dx", torch.tensor(3.0), torch.tensor(0.0), 1e-5, 1e-8) == "1 of 1 entries of `dx` are wrong"


def test_a_failing_verdict_carries_its_value_hint():
    result = verdict(EXPECTED * -1)
    assert result.status is Status.FAIL and result.hint == "`dx` has the right size but the opposite sign"
    assert result.maxdiff == pytest.approx(2.0)
    n = verdict(EXPECTED * 32 / 31, n=32)
    assert n.hint == "`dx` is n/(n-1) times the right gradient"


def test_a_verdict_survives_its_json_round_trip():
    result = TensorResult(name="dx", tensor="x", status=Status.FAIL, maxdiff=math.inf, expected_shape=(3, 4),
                          got_shape=(4, 3), line=9, hint="h", policy="autograd", chained="fail", probe="pass",
                          warning="w", about="a", cell=2, failed_at="small", mistake="dim", scored=False)
    data = result.to_dict()
    assert data["status"] == "fail" and data["maxdiff"] == "inf" and data["expected_shape"] == [3, 4]
    assert json.loads(json.dumps(data)) == data and type(data["status"]) is str
    assert set(data) == {"name", "tensor", "status", "maxdiff", "expected_shape", "got_shape", "line", "hint", "policy",
                         "chained", "probe", "warning", "about", "cell", "failed_at", "mistake", "scored"}
    assert TensorResult.from_dict(data) == result
    plain = TensorResult(name="dx", tensor="x", status=Status.EXACT, maxdiff=0.0)
    assert TensorResult.from_dict(plain.to_dict()) == plain and plain.to_dict()["got_shape"] is None


def test_a_files_score_counts_scored_passes_and_the_training_run():
    from grader.training import TrainingComparison

    rows = (TensorResult("da", "a", Status.EXACT), TensorResult("db", "b", Status.APPROX),
            TensorResult("dc", "c", Status.FAIL), TensorResult("dd", "d", Status.EXACT, scored=False),
            TensorResult("de", "e", Status.BLANK))
    result = FileResult(file="f.py", exercise="ex1", results=rows, points=2.0)
    assert (result.passing, result.checks, result.score, result.max_score) == (2, 4, 4.0, 8.0)
    assert not result.passed
    good = TrainingComparison(1000, 1e-5, 1e-7, 2.0, 2.0, None)
    bad = TrainingComparison(1000, 1e-5, 1e-3, 2.1, 2.0, 5)
    assert (FileResult("f.py", "ex4", rows, training=good).passing, FileResult("f.py", "ex4", rows, training=bad).passing,
            FileResult("f.py", "ex4", rows, training=bad).checks) == (3, 2, 5)
    everything = FileResult("f.py", "ex1", rows[:2])
    assert everything.passed and not FileResult("f.py", "ex1", rows[:2], error="time limit").passed
    assert not FileResult("f.py", "ex1", error="syntax error at line 3: x").parses
    assert FileResult("f.py", "ex1", error="time limit").parses and FileResult("f.py", "ex1").parses
    whole = FileResult("f.py", "ex4", rows, points=2.0, notes=("n",), training=bad, output="out", names="a=b",
                       error="time limit of 5 s exceeded")
    data = whole.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert {k: v for k, v in data.items() if k not in ("results", "training")} == {
        "file": "f.py", "exercise": "ex4", "score": 4.0, "max_score": 10.0, "points": 2.0,
        "error": "time limit of 5 s exceeded", "output": "out", "notes": ["n"], "names": "a=b"}
    assert data["training"] == bad.to_dict() and data["results"] == [r.to_dict() for r in rows]
    assert FileResult.from_dict(data) == whole
    bare = FileResult("f.py", "ex1", rows[:1])
    assert bare.to_dict()["training"] is None and FileResult.from_dict(bare.to_dict()) == bare
    # What an older results line lacks is taken as empty.
    old = {k: v for k, v in bare.to_dict().items() if k not in ("output", "notes")}
    assert FileResult.from_dict(old) == bare


@pytest.mark.parametrize("text, said", BAD_SETTINGS)
def test_a_settings_file_that_cannot_be_used_says_why(tmp_path, text, said):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=None) as raised:
        load_settings(str(path))
    assert said in str(raised.value)


def test_a_settings_file_sets_what_it_names_and_keeps_the_rest(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text("[grading]\natol = 1e-7\nshape_gate = \"warn\"\n[exercises.ex1]\nallow = [\"softmax\"]\n")
    assert load_settings(str(path)) == Settings(rtol=1e-5, atol=1e-7, shape_gate="warn", allow={"ex1": ("softmax",)})
    path.write_text("[exercises.ex1]\n")
    assert load_settings(str(path)).allow == {"ex1": ()}
    path.write_text("[grading]\nrtol = 1e-4\n")
    assert load_settings(str(path)) == Settings(rtol=1e-4)
    path.write_text("")
    assert load_settings(str(path)) == Settings()
    with pytest.raises(ValueError, match="cannot be read"):
        load_settings(str(tmp_path / "nothing.toml"))


def test_a_settings_file_on_a_python_without_toml_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def without_toml(name, *args, **kwargs):
        if name in ("tomllib", "tomli"):
            raise ModuleNotFoundError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_toml)
    (tmp_path / "s.toml").write_text("")
    with pytest.raises(ValueError, match="^reading a settings file needs Python 3.11 or the tomli package$"):
        load_settings(str(tmp_path / "s.toml"))
