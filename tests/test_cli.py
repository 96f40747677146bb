"""The `grade` command as a student runs it: tables, JSON, exit codes and one-sentence errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from grader.cli import cli
from grader.exercises import EX1

from conftest import python_prints, replace_line

SOLUTION_PATH = str(EX1.solution_path)
STUB_PATH = str(EX1.stub_path)


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_solution_prints_a_green_table_and_exits_0():
    result = run(SOLUTION_PATH)
    assert result.exit_code == 0, result.output
    assert "26/26 passing: 26 exact, 0 approx" in result.output
    assert "dlogprobs" in result.output and "dC" in result.output


def test_stub_exits_1_with_every_line_blank():
    result = run(STUB_PATH)
    assert result.exit_code == 1
    assert "0/26 passing: 0 exact, 0 approx · 26 blank" in result.output


def test_json_follows_the_schema():
    result = run(SOLUTION_PATH, "--json")
    data = json.loads(result.output)
    assert data["exercise"] == "ex1" and data["score"] == 26.0 and data["max_score"] == 26.0
    assert data["error"] is None
    first = data["results"][0]
    line = 1 + next(i for i, text in enumerate(EX1.solution_path.read_text().splitlines()) if text.startswith("dlogprobs ="))
    spec_fields = {key: first[key] for key in
                   ("name", "tensor", "status", "maxdiff", "expected_shape", "got_shape", "line", "hint")}
    assert spec_fields == {
        "name": "dlogprobs", "tensor": "logprobs", "status": "exact", "maxdiff": 0.0,
        "expected_shape": [32, 27], "got_shape": [32, 27], "line": line, "hint": None,
    }
    assert first["policy"] is None and first["chained"] == "exact"
    assert [r["name"] for r in data["results"]] == list(EX1.targets) and len(data["results"]) == 26
    assert all(r["status"] == "exact" and r["expected_shape"] == r["got_shape"] for r in data["results"])
    assert {r["probe"] for r in data["results"][1:]} == {"pass"}  # every line that reads upstream is probed


def test_several_files_give_a_json_list_and_exit_1_if_any_fails():
    result = run(SOLUTION_PATH, STUB_PATH, "--json")
    assert result.exit_code == 1
    assert [d["score"] for d in json.loads(result.output)] == [26.0, 0.0]


def test_a_wrong_line_shows_its_hint_under_the_row(tmp_path):
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(replace_line(EX1.solution_path.read_text(), "dW2 =", "dW2 = dlogits.T @ h"))
    result = run(str(path))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    row = next(i for i, line in enumerate(lines) if line.strip().startswith("dW2"))
    assert "fail" in lines[row] and "transpose" in lines[row + 1]
    assert "25/26 passing: 25 exact, 0 approx · 1 fail" in result.output


def test_exercise_is_recognised_from_the_names_a_file_assigns(tmp_path):
    path = tmp_path / "my_homework.py"
    path.write_text(EX1.solution_path.read_text())
    assert run(str(path)).exit_code == 0
    unknown = tmp_path / "notes.py"
    unknown.write_text("x = 1\n")
    result = run(str(unknown))
    assert result.exit_code == 2 and "cannot tell which exercise" in result.output
    assert run(str(unknown), "--exercise", "ex1").exit_code == 1  # graded: every name missing
    assert "no exercise 'ex9'" in run(str(unknown), "--exercise", "ex9").output


def test_bad_input_is_one_sentence_and_exit_2(tmp_path):
    binary = tmp_path / "ex1.py"
    binary.write_bytes(b"\xff\xfe\x00")
    latin = tmp_path / "ex1_latin.py"
    latin.write_bytes("dh = 'caf\xe9'\n".encode("latin-1"))
    text = tmp_path / "ex1.txt"
    text.write_text("dh = 1\n")
    for path, words in [
        (tmp_path / "nope.py", "does not exist"),
        (tmp_path, "is a directory"),
        (binary, "binary file"),
        (latin, "not UTF-8"),
        (text, "not a Python file"),
    ]:
        result = run(str(path))
        assert result.exit_code == 2, path
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_the_installed_command_runs_and_sets_the_exit_code(tmp_path):
    # The console script the README's install puts beside this Python, as a student types it.
    grade = Path(sys.executable).parent / "grade"
    assert grade.is_file(), "the package's `grade` command is not installed"
    done = subprocess.run([str(grade), SOLUTION_PATH, "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["score"] == 26.0
    wrong = tmp_path / "ex1_backprop_all.py"
    wrong.write_text(replace_line(EX1.solution_path.read_text(), "dW2 =", "dW2 = dlogits.T @ h"))
    done = subprocess.run([str(grade), str(wrong)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "25/26 passing" in done.stdout
    done = subprocess.run([str(grade), "missing.py"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == "Error: missing.py does not exist."


def test_grading_a_file_leaves_nothing_behind_in_the_temporary_folder(tmp_path):
    import os
    import time

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", "from grader.cli import main; main()", str(EX1.solution_path)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 10  # the worker tidies up as it sees the grader go
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.iterdir()) == []


def test_help_and_hint_answer_without_importing_torch():
    """`grade --help` and `grade hint` are what a student runs while reading: they answer at once, so
    they must not pay for importing torch (a second here). Run as the console script runs them."""
    probe = (
        "import sys\n"
        "from grader.cli import cli\n"
        "for args in (['--help'], ['hint', 'dbnvar'], ['hint', 'dlogits', '--exercise', 'ex2'], ['files', '--help']):\n"
        "    try:\n"
        "        cli.main(args, prog_name='grade')\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (args, exc.code)\n"
        "print('torch imported' if 'torch' in sys.modules else 'no torch')\n"
    )
    printed = python_prints(probe)
    assert "power rule" in printed  # the hint itself was printed
    assert printed.endswith("no torch")
