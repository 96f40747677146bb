"""Notebooks: generated stubs, grading any lecture notebook, and check() in Jupyter."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
from click.testing import CliRunner

from grader import check, setup
from grader.cli import cli
from grader.compare import Status
from grader.exercises import EX1, EXERCISES
from grader.grading import grade_file
from grader.stubs import generate_notebook, notebook_path

from conftest import SOLUTION

ANSWERS = {m.group(1): m.group(0).split("  #")[0] for m in re.finditer(r"^(d\w+) = .*$", SOLUTION, re.M)}


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_committed_notebooks_are_current_valid_and_without_outputs(exercise):
    text = notebook_path(exercise).read_text()
    assert text == generate_notebook(exercise), "run `python -m grader.stubs`"
    notebook = nbformat.reads(text, as_version=4)
    nbformat.validate(notebook)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    assert any("gradient" in cell.metadata.get("tags", []) for cell in notebook.cells)


def solved_notebook(tmp_path, answers=ANSWERS):
    notebook = nbformat.reads(notebook_path(EX1).read_text(), as_version=4)
    for cell in notebook.cells:
        if "gradient" in cell.metadata.get("tags", []):
            cell.source = "\n".join(answers.get(line.split(" =")[0], line) if line.endswith("= ...") else line
                                    for line in cell.source.splitlines())
    path = tmp_path / "ex1_backprop_all.ipynb"
    path.write_text(nbformat.writes(notebook))
    return path


def test_a_stub_notebook_filled_with_the_solution_passes_in_every_cell(tmp_path):
    result = grade_file(path=solved_notebook(tmp_path))
    assert result.passed and result.score == 26
    notebook = nbformat.reads(notebook_path(EX1).read_text(), as_version=4)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    tagged = {i for i, c in enumerate(code_cells, start=1) if "gradient" in c.metadata.get("tags", [])}
    assert len(tagged) == 6 and {r.cell for r in result.results} == tagged  # counted as Jupyter shows code cells
    stub = grade_file(path=notebook_path(EX1))
    assert {r.status for r in stub.results} == {Status.BLANK}


def test_a_wrong_line_in_a_notebook_is_reported_by_cell_and_line(tmp_path):
    answers = {**ANSWERS, "dW2": "dW2 = dlogits.T @ h"}
    result = CliRunner().invoke(cli, [str(solved_notebook(tmp_path, answers)), "--json"])
    row = next(r for r in json.loads(result.output)["results"] if r["name"] == "dW2")
    assert row["status"] == "fail" and row["cell"] == 3 and row["line"] == 3 and "transpose" in row["hint"]


def code(source: str):
    return nbformat.v4.new_code_cell(source)


def lecture_notebook(names=lambda name: name):
    """A student's own copy of the lecture: data from a file that is not here, training, plots, cmp."""
    cells = [
        code("import torch\nimport torch.nn.functional as F\nimport matplotlib.pyplot as plt\n%matplotlib inline"),
        code("words = open('names.txt', 'r').read().splitlines()\nprint(len(words))"),
        code("def cmp(s, dt, t):\n    ex = torch.all(dt == t.grad).item()\n    print(s, ex)"),
        code("for i in range(200000):\n    pass  # the lecture's training loop\nplt.plot(lossi)"),
        code("emb = C[Xb]\nlogits = h @ W2 + b2\nloss.backward()"),  # forward cells: never run
        code("\n".join(names(ANSWERS[t]) for t in EX1.targets[:8])),
        code("cmp('logprobs', dlogprobs, logprobs)\nscale = 1.0 / n\n" + names("dh = dlogits @ W2.T") + " * scale * n"),
        code("\n".join(names(ANSWERS[t]) for t in EX1.targets[9:]) + "\ncmp('C', dC, C)\nplt.show()"),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def test_a_lecture_notebook_is_graded_without_running_its_other_cells(tmp_path):
    path = tmp_path / "my_makemore_part4.ipynb"
    path.write_text(nbformat.writes(lecture_notebook()))
    result = grade_file(path=path)
    assert result.exercise == "ex1" and result.error is None
    assert all(r.status.passed for r in result.results), [(r.name, r.status, r.hint) for r in result.results]
    assert next(r for r in result.results if r.name == "dh").cell == 7  # kept with its helper `scale`


def renamed(text: str) -> str:
    """Every gradient name written the student's way: `dlogprobs` -> `d_logprobs`."""
    return re.sub(r"\bd(" + "|".join(t[1:] for t in EX1.targets) + r")\b", r"d_\1", text)


def test_renamed_variables_get_a_suggested_mapping_and_grade_with_it(tmp_path):
    path = tmp_path / "homework.ipynb"
    path.write_text(nbformat.writes(lecture_notebook(renamed)))
    result = CliRunner().invoke(cli, [str(path)])
    assert result.exit_code == 2 and "assigns none of the lecture's gradient names" in result.output
    assert "try --names " in result.output and "d_logprobs=dlogprobs" in result.output
    mapping = ",".join(f"d_{t[1:]}={t}" for t in EX1.targets)
    result = CliRunner().invoke(cli, [str(path), "--names", mapping])
    assert result.exit_code == 0, result.output
    names_file = tmp_path / "names.txt"
    names_file.write_text(mapping.replace(",", "\n"))
    assert CliRunner().invoke(cli, [str(path), "--names", str(names_file)]).exit_code == 0


def test_check_grades_the_cells_the_kernel_ran():
    from messy import EXERCISE1, SETUP, lecture_cells, where

    cells = lecture_cells(parts=(SETUP, EXERCISE1))
    result = check({"In": ["", *cells]})
    assert result.passed and len(result.results) == 26
    assert "<table>" in result._repr_html_() and "26/26 passing" in repr(result)
    cells = lecture_cells({"dbnmeani = (-dbndiff).sum(0, keepdim=True)": "dbnmeani = (-dbndiff).sum(0)"},
                          parts=(SETUP, EXERCISE1))
    wrong = check({"In": ["", *cells]})
    row = next(r for r in wrong.results if r.name == "dbnmeani")
    assert row.status is Status.FAIL and "keepdim=True" in row.hint  # the lecture's cmp() would say exact
    cell, line = where(cells, "dbnmeani = (-dbndiff).sum(0)")
    html = wrong._repr_html_()
    assert "keepdim" in html and "25/26 passing" in html
    assert f"start with <code>dbnmeani</code>, cell {cell}, line {line} · <code>hint(&quot;dbnmeani&quot;)</code>" in html


def test_check_follows_a_mapping_and_explains_an_empty_notebook():
    from messy import EXERCISE1, SETUP, lecture_cells

    cells = [cell.replace("dlogprobs", "d_logprobs") for cell in lecture_cells(parts=(SETUP, EXERCISE1))]
    row = next(r for r in check({"In": ["", *cells]}).results if r.name == "dlogprobs")
    assert row.status is Status.MISSING and "--names d_logprobs=dlogprobs" in row.hint
    assert check({"In": ["", *cells]}, names="d_logprobs=dlogprobs").passed
    empty = check({"In": ["", "x = 1"]})
    assert not empty.passed and "none of the cells you have run" in repr(empty)
    assert "none of the cells you have run" in empty._repr_html_()
    outside = check({"x": 1})
    assert not outside.passed and "grade NOTEBOOK" in repr(outside)


def test_setup_then_check_in_a_fresh_namespace():
    namespace: dict = {}
    assert "26 gradients to write" in setup("ex1", namespace)
    cells = ["setup('ex1')", "\n".join(ANSWERS[t] for t in EX1.targets)]
    namespace["In"] = ["", *cells]
    assert check(namespace).passed
    namespace["In"].append("dh = dh.T")
    wrong = check(namespace)
    assert not wrong.passed and next(r for r in wrong.results if r.name == "dh").status is Status.FAIL


def test_the_overview_grades_the_notebook_when_it_is_the_newer_file(tmp_path):
    import os
    import shutil

    folder = tmp_path / "exercises"
    folder.mkdir()
    shutil.copy(EX1.stub_path, folder / EX1.stub_path.name)
    solved = solved_notebook(tmp_path)
    shutil.copy(solved, folder / solved.name)
    old = (folder / EX1.stub_path.name).stat().st_mtime - 60
    os.utime(folder / EX1.stub_path.name, (old, old))
    result = CliRunner().invoke(cli, ["--dir", str(folder)])
    assert result.output.startswith("ex1  ██████████ 26/26")


def test_a_missing_gradient_with_a_look_alike_name_suggests_the_mapping(tmp_path):
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(SOLUTION.replace("dbnvar_inv", "d_bnvar_inv"))
    result = grade_file(path=path)
    row = next(r for r in result.results if r.name == "dbnvar_inv")
    assert row.status is Status.MISSING and "--names d_bnvar_inv=dbnvar_inv" in row.hint
    assert all(r.hint is None for r in grade_file(path=EX1.solution_path).results)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.id)
def test_check_in_the_kits_own_notebooks_says_what_grade_says(tmp_path, exercise):
    solved = generate_notebook(exercise, exercise.solution_path.read_text())
    path = tmp_path / notebook_path(exercise).name
    path.write_text(solved)
    graded = grade_file(path=path)
    notebook = nbformat.reads(solved, as_version=4)
    namespace: dict = {}
    setup(exercise.id, namespace)
    namespace["In"] = ["", *(c.source for c in notebook.cells if c.cell_type == "code")]
    checked = check(namespace)
    assert [f.exercise for f in checked.files] == [exercise.id] and graded.passed and checked.passed
    assert [(r.name, r.status, r.cell, r.line, r.hint) for r in checked.results] == [
        (r.name, r.status, r.cell, r.line, r.hint) for r in graded.results]
