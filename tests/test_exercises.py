"""Exercises 2-4 and the overview: solutions pass, stubs are blank, wrong answers fail."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from grader.cli import cli, slow_warning
from grader.compare import Status
from grader.exercises import EX1, EX2, EX3, EX4, EXERCISES
from grader.network import TRAINING
from grader.stubs import generate
from grader.training import (
    TrainingComparison, compare_training, initial_state, learning_rate, next_batch, training_data,
)

from conftest import by_name, grade_text, replace_line


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_every_solution_passes(exercise):
    result = grade_text(exercise.solution_path.read_text(), filename=exercise.solution_path.name, exercise=exercise)
    assert result.passed, [(r.name, r.status, r.hint) for r in result.results] + [result.error]
    assert result.score == result.max_score


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_every_stub_is_current_and_all_blank(exercise):
    assert exercise.stub_path.read_text() == generate(exercise), "run `python -m grader.stubs`"
    result = grade_text(exercise.stub_path.read_text(), filename=exercise.stub_path.name, exercise=exercise)
    assert {r.status for r in result.results} == {Status.BLANK}
    assert result.score == 0 and not result.passed


def test_ex2_lecture_answer_is_approx_and_a_pass():
    source = replace_line(
        EX2.solution_path.read_text(), "dlogits =",
        "dlogits = F.softmax(logits, 1)\ndlogits[range(n), Yb] -= 1\ndlogits /= n",
    )
    result = grade_text(source, exercise=EX2)
    assert result.results[0].status is Status.APPROX and result.passed


def test_ex2_without_the_batch_mean_fails():
    source = replace_line(EX2.solution_path.read_text(), "dlogits =",
                          "dlogits = F.softmax(logits, 1) - F.one_hot(Yb, vocab_size)")
    assert grade_text(source, exercise=EX2).results[0].status is Status.FAIL


def test_ex2_has_no_chunked_intermediates_in_scope():
    source = replace_line(EX2.solution_path.read_text(), "dlogits =", "dlogits = probs.clone()")
    result = grade_text(source, exercise=EX2).results[0]
    assert result.status is Status.ERROR and "probs" in result.hint


def test_ex3_without_bessels_correction_fails():
    source = EX3.solution_path.read_text().replace("n/(n-1)*bnraw", "bnraw")
    assert grade_text(source, exercise=EX3).results[0].status is Status.FAIL


def test_ex4_wrong_parameter_gradient_fails_that_one_and_the_training_run():
    source = replace_line(EX4.solution_path.read_text(), "dW2 =", "dW2 = dlogits.T @ h")
    result = grade_text(source, exercise=EX4)
    assert [r.name for r in result.results if not r.status.passed] == ["dW2"]
    assert "transpose" in by_name(result)["dW2"].hint
    assert result.training is not None and not result.training.passed


# A classic training-loop bug: the buffer for dC is made once and never zeroed, so
# gradients pile up from step to step. Each checked step starts fresh, so only the
# training run can see it.
ACCUMULATING_DC = """try:
    dC
except NameError:
    dC = torch.zeros_like(C)
dC.index_add_(0, Xb.view(-1), demb.view(-1, n_embd))"""


def test_ex4_gradient_that_drifts_over_steps_is_caught_only_by_the_training_run():
    source = replace_line(EX4.solution_path.read_text(), "dC =", ACCUMULATING_DC)
    result = grade_text(source, exercise=EX4)
    assert all(r.status.passed for r in result.results)
    assert not result.training.passed
    assert result.training.max_loss_diff > 100 * result.training.tolerance
    assert not result.passed and result.score == result.max_score - 1


LECTURE_TANH = replace_line(EX4.solution_path.read_text(), "dhpreact =", "dhpreact = (1.0 - h**2) * dh")
FRESH_PROCESS = """
import json, sys
from grader.exercises import EX4
import torch
import torch.nn.functional as F

from grader.network import TRAINING
from grader.training import (
    TrainingComparison, compare_training, initial_state, learning_rate, next_batch, training_data,
)
print(json.dumps(compare_training(source=sys.stdin.read(), filename="ex4.py", targets=EX4.targets,
                                  allowed=EX4.allowed).to_dict()))
"""


def _autograds_losses(steps: int) -> list[float]:
    """The lecture's training loop on autograd, written out here: the losses the comparison tracks."""
    data = training_data(TRAINING)
    params, g = initial_state(TRAINING)
    params = {name: p.clone().requires_grad_() for name, p in params.items()}
    losses = []
    for step in range(steps):
        Xb, Yb = next_batch(data, g, TRAINING.batch_size)
        emb = params["C"][Xb]
        hprebn = emb.view(emb.shape[0], -1) @ params["W1"] + params["b1"]
        bnraw = (hprebn - hprebn.mean(0, keepdim=True)) * (hprebn.var(0, keepdim=True, unbiased=True) + 1e-5) ** -0.5
        h = torch.tanh(params["bngain"] * bnraw + params["bnbias"])
        loss = F.cross_entropy(h @ params["W2"] + params["b2"], Yb)
        for p in params.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in params.values():
                p += -learning_rate(step) * p.grad
        losses.append(loss.item())
    return losses


def test_training_comparison_gives_the_same_numbers_anywhere_and_tracks_autograds_own_loop():
    here = compare_training(source=LECTURE_TANH, filename="ex4.py", targets=EX4.targets, allowed=EX4.allowed)
    ran = subprocess.run([sys.executable, "-c", FRESH_PROCESS], input=LECTURE_TANH, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert TrainingComparison.from_dict(json.loads(ran.stdout)) == here  # another process: the very same numbers
    # The lecture's tanh formula rounds differently from autograd's kernel: not bitwise, within 1e-6.
    assert here.passed and 0 < here.max_loss_diff <= 1e-6
    # Both curves are the lecture's: autograd's final loss is the one a plain training loop reaches.
    losses = _autograds_losses(here.steps)
    assert abs(here.autograd_final - losses[-1]) <= 1e-6
    assert abs(here.student_final - losses[-1]) <= 1e-5 and 2.0 < losses[-1] < 3.3 < losses[0]


def mixed_checkout(tmp_path):
    folder = tmp_path / "exercises"
    folder.mkdir()
    shutil.copy(EXERCISES[0].solution_path, folder / EXERCISES[0].stub_path.name)  # ex1 done
    shutil.copy(EX2.stub_path, folder / EX2.stub_path.name)  # ex2 blank
    (folder / EX3.stub_path.name).write_text(EX3.solution_path.read_text().replace("n/(n-1)*bnraw", "bnraw"))
    return folder  # ex4 not started


def test_overview_of_a_mixed_checkout_counts_and_exits_1(tmp_path):
    folder = mixed_checkout(tmp_path)
    result = CliRunner().invoke(cli, ["--dir", str(folder)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("ex1  ██████████ 26/26")
    assert any(line.startswith("ex2  ░░░░░░░░░░  0/1") for line in lines)
    assert "next: `dlogits` in ex2, line" in result.output and "(blank)" in result.output
    assert "next: `dhprebn` in ex3" in result.output and "(fail)" in result.output
    assert "not started" in result.output and "ex4_training.py does not exist" in result.output
    assert lines[-1] == "total: 26/36 passing · 1 of 4 exercises complete"


def test_overview_exits_0_when_everything_passes(tmp_path):
    folder = tmp_path / "exercises"
    folder.mkdir()
    for exercise in EXERCISES:
        shutil.copy(exercise.solution_path, folder / exercise.stub_path.name)
    result = CliRunner().invoke(cli, ["--dir", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "total: 36/36 passing · 4 of 4 exercises complete"


def test_overview_without_an_exercises_folder_says_so(tmp_path):
    result = CliRunner().invoke(cli, ["--dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "there is no folder" in result.output


def test_train_runs_reports_losses_and_samples_names():
    result = CliRunner().invoke(cli, [str(EX4.solution_path), "--train", "--steps", "300"])
    assert result.exit_code == 0, result.output
    assert "trained 300 steps" in result.output and "train loss" in result.output and "val loss" in result.output
    names = result.output.split("20 names sampled from your network:\n", 1)[1].split()
    assert len(names) == 20


def test_train_is_refused_for_other_exercises():
    result = CliRunner().invoke(cli, [str(EX2.solution_path), "--train"])
    assert result.exit_code == 2 and "--train is for exercise 4" in result.output
    notebook = CliRunner().invoke(cli, [str(EX1.stub_path.with_suffix(".ipynb")), "--train"])
    assert notebook.exit_code == 2 and "--train is for exercise 4" in notebook.output


def test_slow_steps_get_a_warning_with_the_way_out():
    assert slow_warning(0.0005, 200_000) is None
    warning = slow_warning(0.05, 200_000)
    assert "2.8 h" in warning and "index_add_" in warning
