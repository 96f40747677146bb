"""Every tolerance has a case on each side of it: an answer just inside passes, one just outside
fails. A tolerance loosened (or tightened) by mistake changes one of these verdicts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from grader.compare import Status
from grader.exercises import EX4

from conftest import by_name, grade_text, replace_line

GRADE = [sys.executable, "-c", "from grader.cli import main; main()"]

# dh is large (entries up to ~0.05), so rtol decides: 5e-6 relative is inside rtol = 1e-5, 5e-5 is out.
DH_INSIDE = "dh = dlogits @ W2.T * 1.000005"
DH_OUTSIDE = "dh = dlogits @ W2.T * 1.00005"
# dlogits is small (entries ~1e-3, where rtol allows ~1e-8), so atol decides an offset: 5e-9 is inside
# atol = 1e-8, 5e-8 is out. (Not a gradient zero in truth: there, the probe tells noise from a mistake.)
SMALL_INSIDE = "dlogits = dnorm_logits + F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes + 5e-9"
SMALL_OUTSIDE = "dlogits = dnorm_logits + F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes + 5e-8"


@pytest.mark.parametrize("line, name, status", [
    (DH_INSIDE, "dh", Status.APPROX),
    (DH_OUTSIDE, "dh", Status.FAIL),
    (SMALL_INSIDE, "dlogits", Status.APPROX),
    (SMALL_OUTSIDE, "dlogits", Status.FAIL),
])
def test_the_default_tolerances_have_an_answer_on_each_side(solution, line, name, status):
    results = by_name(grade_text(replace_line(solution, line.split(" =")[0] + " =", line)))
    assert results[name].status is status, results[name]
    # Only that line: the others are fed the reference's gradients.
    assert all(r.status.passed for n, r in results.items() if n != name)


def _grade_cli(path, *extra) -> dict:
    ran = subprocess.run([*GRADE, "files", str(path), "--json", *extra], capture_output=True, text=True, timeout=300)
    assert ran.returncode in (0, 1), ran.stderr
    return {r["name"]: r["status"] for r in json.loads(ran.stdout)["results"]}


def test_a_settings_file_moves_each_tolerance(solution, tmp_path):
    both = replace_line(replace_line(solution, "dh =", DH_OUTSIDE), "dlogits =", SMALL_OUTSIDE)
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(both)
    verdicts = _grade_cli(path)
    assert verdicts["dh"] == "fail" and verdicts["dlogits"] == "fail"
    loose_rtol = tmp_path / "rtol.toml"
    loose_rtol.write_text("[grading]\nrtol = 1e-4\n")
    verdicts = _grade_cli(path, "--config", str(loose_rtol))
    assert verdicts["dh"] == "approx" and verdicts["dlogits"] == "fail"
    loose_atol = tmp_path / "atol.toml"
    loose_atol.write_text("[grading]\natol = 1e-7\n")
    verdicts = _grade_cli(path, "--config", str(loose_atol))
    assert verdicts["dh"] == "fail" and verdicts["dlogits"] == "approx"
    # Tighter than the defaults: the answers just inside them fail.
    inside = tmp_path / "inside" / "ex1_backprop_all.py"
    inside.parent.mkdir()
    inside.write_text(replace_line(replace_line(solution, "dh =", DH_INSIDE), "dlogits =", SMALL_INSIDE))
    assert _grade_cli(inside)["dh"] == "approx"
    tight = tmp_path / "tight.toml"
    tight.write_text("[grading]\nrtol = 1e-6\natol = 1e-9\n")
    verdicts = _grade_cli(inside, "--config", str(tight))
    assert verdicts["dh"] == "fail" and verdicts["dlogits"] == "fail"


# Exercise 4's training run: a dW2 off by a relative k moves the loss over the 1,000 steps by about
# 0.27 k. The lecture's own formulas stay within 1e-6 of autograd's losses.
@pytest.mark.parametrize("k, passed", [("2e-5", True), ("5e-5", False)])
def test_the_training_runs_loss_tolerance_has_a_run_on_each_side(k, passed):
    source = replace_line(EX4.solution_path.read_text(), "dW2 =", f"dW2 = h.T @ dlogits * (1 + {k})")
    training = grade_text(source, exercise=EX4).training
    assert 3e-6 < training.max_loss_diff < 3e-5  # near the line (1e-5, the README's figure), not far from it
    assert training.passed is passed
