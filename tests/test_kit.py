"""Starting anywhere: `grade init` makes an exercise folder, `grade` grades it, `grade list` and
`grade reset` work in it, and the built wheel carries all of that (and no solution) to a fresh
virtualenv outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.exercises import EX1, EX2, EXERCISES

from conftest import SOLUTION, replace_line

ROOT = Path(__file__).resolve().parent.parent
STUBS = [exercise.stub_path.with_suffix(suffix) for exercise in EXERCISES for suffix in (".py", ".ipynb")]


def run_in(folder: Path, *args: str, stdin: str | None = None):
    """`grade ARGS` as a student runs it, in `folder`."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        return CliRunner().invoke(cli, list(args), input=stdin)
    finally:
        os.chdir(before)


def test_init_writes_every_stub_as_shipped_and_a_readme_and_never_overwrites(tmp_path):
    result = run_in(tmp_path, "init", "mine")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "mine"
    for stub in STUBS:
        assert (folder / stub.name).read_bytes() == stub.read_bytes(), stub.name
    assert "grade init" not in (folder / "README.md").read_text() and "grade list" in (folder / "README.md").read_text()
    assert "cd mine" in result.output and "grade" in result.output.splitlines()[-1]
    (folder / EX1.stub_path.name).write_text(SOLUTION)
    again = run_in(tmp_path, "init", "mine")
    assert again.exit_code == 2 and "already holds" in again.output
    assert (folder / EX1.stub_path.name).read_text() == SOLUTION  # the student's work is untouched


def test_init_into_a_file_is_one_sentence(tmp_path):
    (tmp_path / "taken").write_text("x")
    result = run_in(tmp_path, "init", "taken")
    assert result.exit_code == 2 and "is a file, not a folder" in result.output


def test_grade_in_an_init_folder_grades_it_and_says_which_file_and_why(tmp_path):
    run_in(tmp_path, "init", "mine")
    folder = tmp_path / "mine"
    edited = folder / EX2.stub_path.name
    edited.write_text(EX2.solution_path.read_text())
    os.utime(edited, (edited.stat().st_mtime + 60,) * 2)  # (a student edits minutes after `grade init`)
    result = run_in(folder)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("ex1  ░░░░░░░░░░  0/26")
    assert "graded ex1_backprop_all.py (neither was changed after the other)" in result.output
    assert any(line.startswith("ex2  ██████████  1/1") for line in lines)
    assert "graded ex2_cross_entropy.py (changed after the notebook)" in result.output
    newer = folder / EX1.stub_path.with_suffix(".ipynb").name
    os.utime(newer, (newer.stat().st_mtime + 60,) * 2)
    assert "graded ex1_backprop_all.ipynb (changed after the .py)" in run_in(folder).output


def test_grade_with_no_exercises_around_says_how_to_get_them(tmp_path):
    for args in ((), ("list",), ("reset", "ex1", "--yes")):
        result = run_in(tmp_path, *args)
        assert result.exit_code == 2 and "grade init" in result.output, args
        assert "Traceback" not in result.output


def test_list_counts_the_written_gradients_of_the_file_worked_on_last(tmp_path):
    run_in(tmp_path, "init", "mine")
    folder = tmp_path / "mine"
    source = EX1.stub_path.read_text()
    source = replace_line(source, "dlogprobs =", "dlogprobs = -1.0/n * F.one_hot(Yb, num_classes=vocab_size).float()")
    source = replace_line(source, "dprobs =", "dprobs = dlogprobs / probs")
    (folder / EX1.stub_path.name).write_text(source)
    result = run_in(folder, "list")
    assert result.exit_code == 0, result.output
    assert "ex1  ex1_backprop_all.py: 2/26 gradients written" in result.output
    assert "ex2  ex2_cross_entropy.py: not started" in result.output
    (folder / EX2.stub_path.name).write_text("dlogits = (\n")
    assert "ex2_cross_entropy.py does not parse" in run_in(folder, "list").output


def test_reset_asks_first_keeps_the_students_file_and_puts_the_stub_back(tmp_path):
    run_in(tmp_path, "init", "mine")
    folder = tmp_path / "mine"
    mine = folder / EX1.stub_path.name
    mine.write_text(SOLUTION)
    refused = run_in(folder, "reset", "ex1")  # not a terminal: it will not guess a yes
    assert refused.exit_code == 2 and "--yes" in refused.output and mine.read_text() == SOLUTION
    result = run_in(folder, "reset", "1", "--yes")
    assert result.exit_code == 0, result.output
    assert mine.read_bytes() == EX1.stub_path.read_bytes()
    assert (folder / "ex1_backprop_all.py.bak").read_text() == SOLUTION
    assert "yours is now ex1_backprop_all.py.bak" in result.output and "it was untouched" in result.output
    mine.write_text(SOLUTION + "# again\n")
    run_in(folder, "reset", "ex1_backprop_all", "--yes")
    assert (folder / "ex1_backprop_all.py.bak2").read_text().endswith("# again\n")
    assert (folder / "ex1_backprop_all.py.bak").read_text() == SOLUTION  # no backup is overwritten
    wrong = run_in(folder, "reset", "ex9", "--yes")
    assert wrong.exit_code == 2 and "there is no exercise 'ex9'" in wrong.output


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The kit as a user gets it: the wheel built from a clean copy of the checkout, and a fresh
    virtualenv with only torch and the like from this interpreter (the kit itself is not in it)."""
    tmp_path = tmp_path_factory.mktemp("installed")
    source, wheels = tmp_path / "source", tmp_path / "wheels"  # (a copy: no build left over from another run)
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = wheels.glob("backprop_ninja-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    return wheel, venv, env


@pytest.mark.slow
def test_the_wheel_carries_the_stubs_and_the_word_list_and_no_solution(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for stub in STUBS:
        assert f"grader/kit_files/exercises/{stub.name}" in names
    assert "grader/kit_files/data/names.txt" in names
    assert {"grader/kit_files/pyproject.toml", "grader/kit_files/setup.py"} <= set(names)  # for the bundle
    assert not any("solutions" in name or "tests/" in name for name in names)


@pytest.mark.slow
def test_every_student_command_works_from_a_folder_outside_the_checkout(installed, tmp_path):
    wheel, venv, env = installed
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, env=env)
    home = tmp_path / "home"
    home.mkdir()

    def grade(*args: str, cwd: Path = home) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / "grade"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=300)

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import grader; print(grader.__file__)"], cwd=home,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where
    assert grade("init").returncode == 0
    folder = home / "backprop-ninja"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["README.md", *(s.name for s in STUBS)])
    edited = folder / EX2.stub_path.name
    shutil.copy(ROOT / "solutions" / EX2.stub_path.name, edited)
    os.utime(edited, (edited.stat().st_mtime + 60,) * 2)  # (a student edits minutes after `grade init`)
    overview = grade(cwd=folder)
    assert overview.returncode == 1 and "ex2  ██████████  1/1" in overview.stdout, overview.stdout + overview.stderr
    assert "graded ex2_cross_entropy.py (changed after the notebook)" in overview.stdout
    assert "ex2_cross_entropy.py: 1/1 gradients written" in grade("list", cwd=folder).stdout
    table = grade(EX2.stub_path.name, "--html", "report.html", cwd=folder)
    assert table.returncode == 0 and "dlogits" in table.stdout and "exact" in table.stdout
    assert "<svg" in (folder / "report.html").read_text()
    assert json.loads(grade(EX2.stub_path.name, "--json", cwd=folder).stdout)["score"] == 1
    assert "power rule" in grade("hint", "dbnvar", cwd=folder).stdout
    reset = grade("reset", "ex2", "--yes", cwd=folder)
    assert reset.returncode == 0 and (folder / "ex2_cross_entropy.py.bak").exists()
    assert grade("--help", cwd=folder).returncode == 0
    # An instructor's installed kit writes the Gradescope bundle as a checkout does.
    bundle = grade("gradescope-bundle", "autograder.zip", "--exercise", "ex1,ex2")
    assert bundle.returncode == 0, bundle.stderr
    with zipfile.ZipFile(home / "autograder.zip") as zf:
        listed = set(zf.namelist())
        assert {"setup.sh", "run_autograder", "pyproject.toml", "setup.py", "README.md", "data/names.txt",
                "grader/cli.py", "grader/kit.py"} <= listed and not any("kit_files" in n for n in listed)
        assert zf.read("setup.py") == (ROOT / "setup.py").read_bytes()


RUN_NOTEBOOK = """
import sys, nbclient, nbformat
notebook = nbformat.read(sys.argv[1], as_version=4)
nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                        resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(notebook, sys.argv[1])
"""


@pytest.mark.slow
def test_check_in_a_students_own_notebook_in_a_fresh_kernel_after_pip_install(installed, tmp_path):
    """The student's own copy of the lecture, in a folder with nothing of the kit's: the kit comes
    from `%pip install` in the notebook, and check() in the last cell says what `grade` says of the
    saved notebook."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    from grader.network import default_words_path

    from messy import EXERCISE1, SETUP, lecture_cells

    wheel, venv, env = installed
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(default_words_path(), work / "names.txt")  # the student's data, as the lecture reads it
    plain = ["import torch\nimport torch.nn.functional as F", *SETUP[1:]]
    mistake = {"dbnvar = -0.5 * (bnvar + 1e-5)**-1.5 * dbnvar_inv": "dbnvar = -0.5 * bnvar**-1.5 * dbnvar_inv"}
    cells = [f"%pip install -q --no-deps {wheel}", *lecture_cells(mistake, parts=(plain, EXERCISE1)),
             "from grader import check\nresult = check()\nimport grader, json\nprint(grader.__file__)\n"
             "print(json.dumps(result.to_dict()))"]
    path = work / "my_lecture.ipynb"
    path.write_text(nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])))
    ran = subprocess.run([str(venv / "bin" / "python"), "-c", RUN_NOTEBOOK, str(path), str(work)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert ran.returncode == 0, ran.stderr[-3000:]
    last = nbformat.read(path, as_version=4).cells[-1]
    printed = "".join(out.get("text", "") for out in last.outputs if out.get("name") == "stdout").strip().splitlines()
    assert printed[-2].startswith(str(venv)), printed  # the kit the notebook installed, not this checkout
    checked = json.loads(printed[-1])
    graded = json.loads(subprocess.run([str(venv / "bin" / "grade"), str(path), "--json"], env=env, cwd=work,
                                       capture_output=True, text=True, timeout=300).stdout)
    graded = graded if isinstance(graded, list) else [graded]

    def verdicts(data):
        return [(r["name"], r["status"], r["cell"], r["line"], r["hint"]) for d in data for r in d["results"]]

    assert [d["exercise"] for d in checked] == ["ex1"]
    assert verdicts(checked) == verdicts(graded)
    assert [v[0] for v in verdicts(checked) if v[1] not in ("exact", "approx")] == ["dbnvar"]
