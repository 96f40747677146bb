"""check() in a real Jupyter kernel: the notebook is executed cell by cell, as a student runs it,
and check() in its last cell must say what `grade` says about the saved notebook."""

from __future__ import annotations

import json
import shutil

import nbformat
import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.network import default_words_path

from messy import EXERCISE1, EXERCISE2, EXERCISE3, SETUP, lecture_cells

nbclient = pytest.importorskip("nbclient")

MISTAKE = {"dbnvar = -0.5 * (bnvar + 1e-5)**-1.5 * dbnvar_inv": "dbnvar = -0.5 * bnvar**-1.5 * dbnvar_inv"}


@pytest.mark.slow
def test_check_in_a_kernel_agrees_with_grade_on_the_saved_notebook(tmp_path):
    shutil.copy(default_words_path(), tmp_path / "names.txt")  # the notebook reads it, as the lecture's does
    plain = ["import torch\nimport torch.nn.functional as F", *SETUP[1:]]  # no matplotlib here
    cells = lecture_cells(MISTAKE, parts=(plain, EXERCISE1, EXERCISE2[:3], EXERCISE3))
    cells.append("from grader import check\nresult = check()\nimport json\nprint(json.dumps(result.to_dict()))")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    printed = "".join(out.get("text", "") for out in notebook.cells[-1].outputs if out.get("name") == "stdout")
    checked = json.loads(printed.strip().splitlines()[-1])
    path = tmp_path / "saved.ipynb"
    path.write_text(nbformat.writes(notebook))
    result = CliRunner().invoke(cli, [str(path), "--json"])
    graded = json.loads(result.output)
    assert [d["exercise"] for d in checked] == [d["exercise"] for d in graded] == ["ex1", "ex2", "ex3"]

    def verdicts(data):
        return [(r["name"], r["status"], r["cell"], r["line"], r["hint"]) for d in data for r in d["results"]]

    assert verdicts(checked) == verdicts(graded)
    wrong = [v for v in verdicts(graded) if v[1] not in ("exact", "approx")]
    assert [v[0] for v in wrong] == ["dbnvar"] and wrong[0][2] == len(plain) + 2  # its own cell
