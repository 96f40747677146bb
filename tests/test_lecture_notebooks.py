"""A student's own lecture notebook, graded as its author meant it: every exercise in it, each from its
own block, with the scaffolding, scratch cells, loops and plots around them never counting."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.compare import Status
from grader.execution import SubmissionError
from grader.grading import grade_path
from grader.jupyter import check

from grader.exercises import EX1

from messy import EXERCISE1, EXERCISE2, EXERCISE3, EXERCISE4, SETUP, lecture_cells, notebook, where

EX1_TARGETS = EX1.targets


def grade_cells(tmp_path, cells, name="my_makemore_part4.ipynb", **options):
    path = tmp_path / name
    path.write_text(notebook(cells, counts=options.pop("counts", None)))
    return {result.exercise: result for result in grade_path(path=path, **options)}


def rows(result):
    return {r.name: r for r in result.results}


def failing(result):
    return {r.name: r for r in result.results if not r.status.passed}


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The correct notebook, graded once: every exercise."""
    return grade_cells(tmp_path_factory.mktemp("whole"), lecture_cells())


def test_every_exercise_in_a_correct_lecture_notebook_passes(whole):
    assert sorted(whole) == ["ex1", "ex2", "ex3", "ex4"]
    for exercise, result in whole.items():
        assert result.error is None and not failing(result), (exercise, failing(result))
        assert result.passed
    assert whole["ex4"].training is not None and whole["ex4"].training.passed
    assert not any("requires_grad" in note or "open" in note for r in whole.values() for note in r.notes)


def test_each_exercise_is_graded_from_its_own_block(whole):
    cells = lecture_cells()
    assert (rows(whole["ex1"])["dlogits"].cell, rows(whole["ex1"])["dlogits"].line) == where(
        cells, "dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes")
    assert rows(whole["ex2"])["dlogits"].cell == where(cells, "dlogits = F.softmax(logits, 1)")[0]
    assert (rows(whole["ex3"])["dhprebn"].cell, rows(whole["ex3"])["dhprebn"].line) == (
        len(SETUP + EXERCISE1 + EXERCISE2) + 2, 1)
    ex4_cell = len(SETUP + EXERCISE1 + EXERCISE2 + EXERCISE3) + 1
    assert {r.cell for r in whole["ex4"].results} == {ex4_cell}
    assert rows(whole["ex1"])["dhprebn"].cell == len(SETUP) + 2  # not exercise 3's one expression


def test_the_lectures_own_dbnmeani_is_the_one_defect_named(tmp_path):
    cells = lecture_cells({"dbnmeani = (-dbndiff).sum(0, keepdim=True)": "dbnmeani = (-dbndiff).sum(0)"})
    graded = grade_cells(tmp_path, cells, exercise="ex1")
    assert list(graded) == ["ex1"]
    wrong = failing(graded["ex1"])
    assert list(wrong) == ["dbnmeani"] and "keepdim=True" in wrong["dbnmeani"].hint
    assert (wrong["dbnmeani"].cell, wrong["dbnmeani"].line) == where(cells, "dbnmeani = (-dbndiff).sum(0)")


PLANTED = {  # exercise -> (the correct line, a mistake, the gradient it breaks)
    "ex1": ("dW2 = h.T @ dlogits", "dW2 = dlogits.T @ h", "dW2"),
    "ex2": ("dlogits /= n", "dlogits /= (n - 1)", "dlogits"),
    "ex3": ("dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))",
            "dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - bnraw*(dhpreact*bnraw).sum(0))",
            "dhprebn"),
    "ex4": ("        db1 = dhprebn.sum(0)", "        db1 = dhprebn.sum(1)", "db1"),
}


@pytest.mark.parametrize("exercise", sorted(PLANTED))
def test_a_planted_mistake_is_found_at_its_own_cell_and_line_and_nowhere_else(tmp_path, exercise):
    right, wrong, name = PLANTED[exercise]
    cells = lecture_cells({right: wrong})
    graded = grade_cells(tmp_path, cells)
    assert sorted(graded) == ["ex1", "ex2", "ex3", "ex4"]
    for other, result in graded.items():
        bad = failing(result)
        if other != exercise:
            assert not bad and (result.training is None or result.training.passed), (other, bad)
            continue
        assert list(bad) == [name], bad
        assert (bad[name].cell, bad[name].line) == where(cells, wrong)


def test_scratch_attempts_that_a_later_cell_replaces_do_not_count(tmp_path):
    scratch = [
        "dh = dlogits @ W2\n",  # a wrong first try, replaced below
        "dW1 = embcat.T @ dhprebn_not_yet\n",  # a NameError from running out of order
        "d2 = torch.zeros_like(logits)\nprint(d2.shape)",
    ]
    cells = lecture_cells(parts=(SETUP, scratch[:2], EXERCISE1, scratch[2:], EXERCISE2))
    graded = grade_cells(tmp_path, cells)
    assert not failing(graded["ex1"]) and not failing(graded["ex2"])
    assert rows(graded["ex1"])["dh"].cell == where(cells, "dh = dlogits @ W2.T")[0]


def test_an_in_place_helper_brings_in_its_first_assignment(tmp_path):
    old = "dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes"
    helper = ("d2 = torch.zeros_like(logits).scatter_(1, logits.max(1, keepdim=True).indices, 1.0)\n"
              "d2 *= dlogit_maxes\n" + "dlogits += d2")
    cells = lecture_cells({old: helper})
    graded = grade_cells(tmp_path, cells, exercise="ex1")
    assert not failing(graded["ex1"]), failing(graded["ex1"])


def test_a_def_body_is_not_the_answer_unless_the_block_calls_it(tmp_path):
    unused = ("def backward_all():\n    dlogprobs = torch.ones_like(logprobs)\n    dW2 = W2 * 0\n"
              "    return dlogprobs, dW2")
    cells = lecture_cells(parts=(SETUP, [unused], EXERCISE1))
    assert not failing(grade_cells(tmp_path, cells)["ex1"])
    called = ("def first_two(logprobs, probs):\n    d = torch.zeros_like(logprobs)\n    d[range(n), Yb] = -1.0 / n\n"
              "    return d, d / probs\n\ndlogprobs, dprobs = first_two(logprobs, probs)")
    cells = lecture_cells(parts=(SETUP, [called], EXERCISE1[1:]))
    graded = rows(grade_cells(tmp_path, cells)["ex1"])
    assert graded["dlogprobs"].status.passed and graded["dprobs"].status.passed
    assert graded["dcounts"].status is Status.MISSING


def test_cells_are_numbered_by_their_execution_count(tmp_path):
    cells = lecture_cells({"dW2 = h.T @ dlogits": "dW2 = h @ dlogits"}, parts=(SETUP, EXERCISE1))
    counts = [3 * i + 5 for i in range(len(cells))]
    result = grade_cells(tmp_path, cells, counts=counts)["ex1"]
    row = rows(result)["dW2"]
    cell, line = where(cells, "dW2 = h @ dlogits")
    assert (row.cell, row.line) == (counts[cell - 1], line)


def test_locations_in_hints_and_the_first_step_are_cells_and_lines(tmp_path):
    cells = lecture_cells({"db2 = dlogits.sum(0)": "db2 = dlogits.sum(0) + undefined_thing",
                           "dW1 = embcat.T @ dhprebn": "dW1 = W1.grad"}, parts=(SETUP, EXERCISE1))
    result = CliRunner().invoke(cli, [str(_write(tmp_path, cells))])
    cell, line = where(cells, "db2 = dlogits.sum(0) + undefined_thing")
    assert f"start with `db2`, cell {cell}, line {line}" in result.output
    assert "NameError" in result.output
    cell, line = where(cells, "dW1 = W1.grad")
    assert f"cell {cell}, line {line}: `grad` is not allowed" in result.output
    # Every location is a cell's, never the assembled source's.
    assert re.findall(r"\bline \d+", result.output) == re.findall(r"(?<=cell \d, )line \d+|(?<=cell \d\d, )line \d+",
                                                                   result.output)


def _write(tmp_path, cells, name="lecture.ipynb"):
    path = tmp_path / name
    path.write_text(notebook(cells))
    return path


def test_the_cli_grades_every_exercise_and_exercise_picks_one(tmp_path):
    path = _write(tmp_path, lecture_cells(parts=(SETUP, EXERCISE1, EXERCISE2, EXERCISE3)))
    result = CliRunner().invoke(cli, [str(path), "--json"])
    data = json.loads(result.output)
    assert result.exit_code == 0 and [d["exercise"] for d in data] == ["ex1", "ex2", "ex3"]
    one = CliRunner().invoke(cli, [str(path), "--json", "--exercise", "ex2"])
    assert json.loads(one.output)["exercise"] == "ex2" and one.exit_code == 0
    absent = CliRunner().invoke(cli, [str(path), "--exercise", "ex4"])
    assert absent.exit_code == 2 and "no exercise 4" in absent.output and "Traceback" not in absent.output


def test_the_lecture_style_exercise_4_passes_even_with_its_scaffolding(whole):
    result = whole["ex4"]
    assert all(r.status.passed for r in result.results) and not result.notes


def test_check_in_the_kernel_gives_the_same_verdicts_as_grade(tmp_path):
    for cells in (lecture_cells(parts=(SETUP, EXERCISE1, EXERCISE2)),
                  lecture_cells({"dbnvar = -0.5 * (bnvar + 1e-5)**-1.5 * dbnvar_inv": "dbnvar = -0.5 * bnvar**-1.5 * dbnvar_inv"},
                                parts=(SETUP, EXERCISE1, EXERCISE3))):
        graded = grade_cells(tmp_path, cells, counts=list(range(1, len(cells) + 1)))
        history = ["", *cells, "from grader import check\ncheck()"]
        checked = check({"In": history})
        assert [r.exercise for r in checked.files] == sorted(graded)
        for result in checked.files:
            ours = [(r.name, r.status, r.cell, r.line, r.hint) for r in result.results]
            theirs = [(r.name, r.status, r.cell, r.line, r.hint) for r in graded[result.exercise].results]
            assert ours == theirs


def test_check_counts_a_cell_run_twice_as_it_was_last_run():
    cells = lecture_cells({"dW2 = h.T @ dlogits": "dW2 = h.T @ dlogits * 2"}, parts=(SETUP, EXERCISE1))
    fixed = lecture_cells(parts=(SETUP, EXERCISE1))[-1]
    checked = check({"In": ["", *cells, fixed]})
    assert checked.passed, repr(checked)
    assert rows(checked.files[0])["dW2"].cell == len(cells) + 1  # the cell's new execution count


def test_a_notebook_with_no_exercise_says_so_in_one_sentence(tmp_path):
    path = _write(tmp_path, SETUP)
    result = CliRunner().invoke(cli, [str(path)])
    assert result.exit_code == 2 and "assigns none of the lecture's gradient names" in result.output
    with pytest.raises(SubmissionError):
        grade_path(path=path)


def test_a_file_with_one_renamed_gradient_is_still_exercise_1(tmp_path):
    from conftest import SOLUTION

    path = tmp_path / "homework.py"
    path.write_text(SOLUTION.replace("dbnvar_inv", "d_bnvar_inv"))
    result = CliRunner().invoke(cli, [str(path), "--json"])
    data = json.loads(result.output)
    assert data["exercise"] == "ex1" and data["names"] == "d_bnvar_inv=dbnvar_inv"
    assert "--names d_bnvar_inv=dbnvar_inv" in CliRunner().invoke(cli, [str(path)]).output


def test_a_mapping_is_never_suggested_from_or_onto_a_lecture_name(tmp_path):
    cells = lecture_cells({"dbndiff2 = 1.0 / (n - 1) * torch.ones_like(bndiff2) * dbnvar": "pass"},
                          parts=(SETUP, EXERCISE1))
    result = grade_cells(tmp_path, cells)["ex1"]
    assert rows(result)["dbndiff2"].status is Status.MISSING
    assert result.names is None and "--names" not in (rows(result)["dbndiff2"].hint or "")


def test_renamed_forward_tensors_and_gradients_get_a_mapping_ready_to_paste(tmp_path):
    def theirs(text):
        for old, new in (("Yb", "yb"), ("dbnraw", "dx_hat"), ("bnraw", "x_hat")):
            text = re.sub(rf"\b{old}\b", new, text)
        return text

    cells = [theirs(cell) for cell in lecture_cells(parts=(SETUP, EXERCISE1))]
    path = _write(tmp_path, cells)
    result = CliRunner().invoke(cli, [str(path)])
    assert result.exit_code == 1
    suggestion = re.search(r"grade again with --names (\S+)", result.output).group(1)
    assert set(suggestion.split(",")) == {"dx_hat=dbnraw", "x_hat=bnraw", "yb=Yb"}
    again = CliRunner().invoke(cli, [str(path), "--names", suggestion])
    assert again.exit_code == 0, again.output


def test_hint_in_the_notebook_explains_a_gradient():
    from grader import hint
    from grader.hints import hint_for

    bank = hint_for("dbndiff2")
    assert repr(hint("dbndiff2")) == f"dbndiff2: {bank.short}\n\n{bank.long}" and "Bessel" in bank.long
    assert "<code>dbndiff2</code>" in hint("bndiff2")._repr_html_()
    with pytest.raises(ValueError, match="no hint for 'nothing'"):
        hint("nothing")


def test_a_class_of_lecture_notebooks_is_graded_exercise_by_exercise(tmp_path):
    import csv

    from grader.batch import run_batch

    folder = tmp_path / "class"
    (folder / "ada").mkdir(parents=True)
    (folder / "ada" / "makemore_part4.ipynb").write_text(
        notebook(lecture_cells({"dW2 = h.T @ dlogits": "dW2 = h @ dlogits"}, parts=(SETUP, EXERCISE1, EXERCISE2))))
    run_batch(submissions=folder, out=tmp_path / "out", jobs=1, sandbox="none", log=lambda *a: None)
    with open(tmp_path / "out" / "gradebook.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert (row["student"], row["ex1"], row["ex2"], row.get("ex3")) == ("ada", "25", "1", None)


def test_a_helper_built_up_in_a_loop_comes_with_its_loop_but_a_loop_variable_never_does(tmp_path):
    old = "db2 = dlogits.sum(0)"
    summed = "rows = torch.zeros(logits.shape[1])\nfor k in range(n):\n    rows += dlogits[k]\n" + "db2 = rows"
    cells = lecture_cells({old: summed}, parts=(SETUP, EXERCISE1))
    cells.insert(len(SETUP), "for p in parameters:\n    p.requires_grad = True\nscale = 1.0")
    cells[-1] = cells[-1].replace("dh = dlogits @ W2.T", "dh = dlogits @ W2.T * scale")
    result = grade_cells(tmp_path, cells)["ex1"]
    assert not failing(result) and not result.notes, (failing(result), result.notes)
    using_p = lecture_cells({old: "db2 = dlogits.sum(0) + 0 * p.sum()"}, parts=(SETUP, EXERCISE1))
    row = rows(grade_cells(tmp_path, using_p)["ex1"])["db2"]
    assert row.status is Status.ERROR and "name 'p' is not defined" in row.hint  # not the parameters loop


def test_check_says_blank_and_error_as_grade_does():
    from grader.jupyter import setup

    namespace: dict = {}
    setup("ex1", namespace)
    lines = [f"{t} = ..." for t in EX1_TARGETS]
    lines[0] = "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0 / n"
    lines[1] = "dprobs = dlogprobs / probs_typo"
    namespace["In"] = ["", "setup('ex1')", "\n".join(lines)]
    result = {r.name: r for r in check(namespace).results}
    assert result["dlogprobs"].status is Status.EXACT
    assert result["dprobs"].status is Status.ERROR and "probs_typo" in result["dprobs"].hint
    assert result["dcounts"].status is Status.BLANK
    assert "start with <code>dprobs</code>, cell 2, line 3" in check(namespace)._repr_html_()


def test_the_table_heads_its_locations_as_cells_and_lines(tmp_path):
    path = _write(tmp_path, lecture_cells(parts=(SETUP, EXERCISE1)))
    output = CliRunner().invoke(cli, [str(path)]).output
    assert "  name             status   maxdiff  cell:line" in output


@pytest.mark.parametrize("reads", ["ix.sum()", "p.sum()", "Xtr.shape[0]"])
def test_the_data_the_batch_and_loop_variables_are_never_brought_in(tmp_path, reads):
    cells = lecture_cells({"db2 = dlogits.sum(0)": f"db2 = dlogits.sum(0) + 0 * {reads}"}, parts=(SETUP, EXERCISE1))
    result = grade_cells(tmp_path, cells)["ex1"]
    row = rows(result)["db2"]
    assert row.status is Status.ERROR and "is not defined" in row.hint, row
    assert not result.notes and list(failing(result)) == ["db2"]  # names.txt was never opened


def test_names_maps_a_python_file_too(tmp_path):
    from conftest import SOLUTION

    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(SOLUTION.replace("dlogprobs", "dLdlogprobs"))
    assert CliRunner().invoke(cli, [str(path)]).exit_code == 1
    result = CliRunner().invoke(cli, [str(path), "--names", "dLdlogprobs=dlogprobs"])
    assert result.exit_code == 0, result.output


# --- what a first round of messy notebooks found ---

def test_helpers_and_gradients_unpacked_from_tuples(tmp_path):
    cells = lecture_cells({
        "dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes":
            "_, amax = logits.max(1)\ndlogits += F.one_hot(amax, num_classes=logits.shape[1]) * dlogit_maxes",
        "for k in range(Xb.shape[0]):": "B, T = Xb.shape\nfor k in range(B):",
        "    for j in range(Xb.shape[1]):": "    for j in range(T):",
        "dh = dlogits @ W2.T": "dh, dW2 = dlogits @ W2.T, h.T @ dlogits",
        "dW2 = h.T @ dlogits": "",
    }, parts=(SETUP, ["dh = dlogits @ W2  # a first try, the wrong shape"], EXERCISE1))
    result = grade_cells(tmp_path, cells)["ex1"]
    assert not failing(result), failing(result)
    assert rows(result)["dh"].cell == rows(result)["dW2"].cell == len(SETUP) + 3


def test_a_redo_after_the_chain_used_a_gradient_does_not_replace_it(tmp_path):
    redo = ["dhpreact = (1.0 - h**2) * dh  # again, for exercise 3\n" + EXERCISE3[1],
            "dh = dlogits @ W2.T  # with exercise 2's dlogits, to see"]
    cells = lecture_cells(parts=(SETUP, EXERCISE1, EXERCISE2[1:2], redo))
    graded = grade_cells(tmp_path, cells)
    assert sorted(graded) == ["ex1", "ex2", "ex3"] and not any(failing(r) for r in graded.values())
    assert rows(graded["ex1"])["dh"].cell == len(SETUP) + 2 and rows(graded["ex3"])["dhprebn"].line == 2


def test_exercises_2_and_3_above_exercise_1_are_still_found(tmp_path):
    cells = lecture_cells(parts=(SETUP, EXERCISE2[1:2], EXERCISE3[1:2], EXERCISE1))
    graded = grade_cells(tmp_path, cells)
    assert sorted(graded) == ["ex1", "ex2", "ex3"] and not any(failing(r) for r in graded.values())
    assert rows(graded["ex2"])["dlogits"].cell == len(SETUP) + 1


def test_ipython_lines_jupyter_accepts(tmp_path):
    cells = lecture_cells({"dW2 = h.T @ dlogits": "%time dW2 = h.T @ dlogits",
                           "dlogits = dnorm_logits.clone()": "F.one_hot?\ndlogits = dnorm_logits.clone()",
                           "dbngain = (bnraw * dhpreact).sum(0, keepdim=True)":
                               "files = !ls\ndbngain = (bnraw * dhpreact).sum(0, keepdim=True)"},
                          parts=(SETUP, EXERCISE1))
    result = grade_cells(tmp_path, cells)["ex1"]
    assert not failing(result) and not result.notes, (failing(result), result.notes)
    assert (rows(result)["dW2"].cell, rows(result)["dW2"].line) == where(cells, "%time dW2 = h.T @ dlogits")


def indented(text: str, by: str) -> str:
    return "\n".join(by + line if line else line for line in text.splitlines())


def test_a_training_loop_nested_in_epochs_with_a_manual_switch(tmp_path):
    loop = EXERCISE4[0]
    head, body = loop.split("for i in range(max_steps):\n")
    backward, rest = body.split("        grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]\n")
    backward = backward.replace("    with torch.no_grad():\n", "    if manual:\n")
    backward = backward.replace("        db1 = dhprebn.sum(0)", "        db1 = dhprebn.sum(1)")
    rewritten = (head + "manual = True\nfor epoch in range(2):\n    for i in range(max_steps // 2):\n"
                 + indented(backward, "    ") + "\n            grads = [dC, dW1, db1, dW2, db2, dbngain, dbnbias]\n"
                 "        else:\n            grads = [p.grad for p in parameters]\n" + indented(rest, "    "))
    cells = lecture_cells(parts=(SETUP, [rewritten]))
    result = grade_cells(tmp_path, cells)["ex4"]
    assert list(failing(result)) == ["db1"] and not result.training.passed
    assert (rows(result)["db1"].cell, rows(result)["db1"].line) == where(cells, "            db1 = dhprebn.sum(1)")


def test_exercise_1_s_whole_chain_inside_the_training_loop(tmp_path):
    chain = "\n".join(indented(cell, "        ") for cell in EXERCISE1).replace("        cmp(", "        # cmp(")
    forward = indented(SETUP[-1].split("for p in parameters:\n    p.grad = None")[0], "    ")
    loop = EXERCISE4[0].split("    ix = torch.randint")[0] + (
        "    ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)\n    Xb, Yb = Xtr[ix], Ytr[ix]\n"
        + forward + "\n    with torch.no_grad():\n" + chain
        + "\n        for p, grad in zip(parameters, [dC, dW1, db1, dW2, db2, dbngain, dbnbias]):\n"
          "            p.data += -0.1 * grad\n")
    result = grade_cells(tmp_path, lecture_cells(parts=(SETUP, [loop])))["ex4"]
    assert all(r.status is not Status.ERROR for r in result.results), failing(result)
    assert not result.notes, result.notes


def test_a_cell_that_does_not_parse_is_named_once_and_plainly(tmp_path):
    cells = lecture_cells(parts=(SETUP, ["dprobs.shape\nfor\n"], EXERCISE1))
    result = grade_cells(tmp_path, cells)["ex1"]
    assert result.notes == (f"cell {len(SETUP) + 1} is not valid Python (line 2: invalid syntax); it is not graded",)
    assert not failing(result)


def test_check_for_an_exercise_the_cells_do_not_answer_says_so():
    cells = lecture_cells(parts=(SETUP, EXERCISE1))
    result = check({"In": ["", *cells]}, exercise="ex2")
    assert not result.files and "has no exercise 2" in repr(result)


def test_a_wholly_renamed_notebook_gets_the_whole_mapping_at_once(tmp_path):
    def theirs(text):
        text = re.sub(r"\bd(\w+)\b", lambda m: f"d_{m.group(1)}" if "d" + m.group(1) in EX1_TARGETS else m.group(0), text)
        return re.sub(r"\bYb\b", "yb", text)

    cells = [theirs(cell) for cell in lecture_cells(parts=(SETUP, EXERCISE1))]
    path = _write(tmp_path, cells)
    first = CliRunner().invoke(cli, [str(path)])
    assert first.exit_code == 2
    mapping = re.search(r"try --names (\S+?)\.?$", first.output.strip()).group(1)
    assert "yb=Yb" in mapping.split(",") and "d_logprobs=dlogprobs" in mapping.split(",")
    assert CliRunner().invoke(cli, [str(path), "--names", mapping]).exit_code == 0
    message = repr(check({"In": ["", *cells]}))
    assert f'check(names="{mapping}")' in message


def test_gradients_a_called_function_assigns_as_globals(tmp_path):
    layer = ("def layer2_backward():\n    global dh, dW2, db2\n    dh = dlogits @ W2.T\n    dW2 = h.T @ dlogits\n"
             "    db2 = dlogits.sum(0)\n")
    cells = lecture_cells({"dh = dlogits @ W2.T": "layer2_backward()", "dW2 = h.T @ dlogits": "",
                           "db2 = dlogits.sum(0)": ""}, parts=(SETUP, [layer], EXERCISE1))
    result = grade_cells(tmp_path, cells)["ex1"]
    assert not failing(result), failing(result)
    assert {(rows(result)[n].cell, rows(result)[n].line) for n in ("dh", "dW2", "db2")} == {
        where(cells, "layer2_backward()")}
    uncalled = lecture_cells(parts=(SETUP, [layer.replace("W2.T", "W2")], EXERCISE1))
    assert not failing(grade_cells(tmp_path, uncalled)["ex1"])  # defined, never called: not the answer


def test_a_renamed_size_is_suggested_from_the_students_own_forward_pass(tmp_path):
    cells = lecture_cells({"batch_size = 32": "BATCH_SIZE = 32", "n = batch_size": "n = BATCH_SIZE",
                           "ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)":
                               "ix = torch.randint(0, Xtr.shape[0], (BATCH_SIZE,), generator=g)",
                           "dlogprobs[range(n), Yb] = -1.0 / n": "dlogprobs[range(BATCH_SIZE), Yb] = -1.0 / BATCH_SIZE"},
                          parts=(SETUP, EXERCISE1))
    path = _write(tmp_path, cells)
    result = CliRunner().invoke(cli, [str(path)])
    assert "dlogprobs        fail" in result.output and "grade again with --names BATCH_SIZE=batch_size" in result.output
    assert CliRunner().invoke(cli, [str(path), "--names", "BATCH_SIZE=batch_size"]).exit_code == 0


@pytest.mark.parametrize("mistake", ["dprobs = dlogprobs / prob", "dprobs = dlogprobs / probs * 2"])
def test_a_cell_run_again_after_a_fix_counts_as_its_last_run(tmp_path, mistake):
    first, second = lecture_cells(parts=(EXERCISE1,))
    broken = first.replace("dprobs = dlogprobs / probs", mistake)
    history = ["", *SETUP, broken, first, second]
    checked = check({"In": history})
    assert checked.passed, [(r.name, r.status, r.hint) for r in checked.results if not r.status.passed]
    assert {r.cell for r in checked.results} == {len(SETUP) + 2, len(SETUP) + 3}  # the fixed run's counts
    graded = grade_cells(tmp_path, [*SETUP, first, second], counts=[*range(1, len(SETUP) + 1), len(SETUP) + 2,
                                                                  len(SETUP) + 3])["ex1"]
    assert [(r.name, r.status, r.cell, r.line) for r in checked.results] == [
        (r.name, r.status, r.cell, r.line) for r in graded.results]


def test_train_on_a_lecture_notebook_trains_its_exercise_4(tmp_path):
    path = _write(tmp_path, lecture_cells(parts=(SETUP, EXERCISE1, EXERCISE4)))
    result = CliRunner().invoke(cli, [str(path), "--train", "--steps", "20"])
    assert result.exit_code == 0 and "trained 20 steps" in result.output, result.output
