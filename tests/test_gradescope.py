"""Gradescope: results.json in the autograder's format, and the autograder zip."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import zipfile

from click.testing import CliRunner

from grader.cli import cli
from grader.exercises import EX2

from conftest import SOLUTION, replace_line

TOP_LEVEL = {"score": (int, float), "execution_time": int, "output": str, "visibility": str,
             "stdout_visibility": str, "tests": list}
TEST_FIELDS = {"name": str, "number": str, "score": (int, float), "max_score": (int, float), "status": str,
               "output": str, "visibility": str}
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}


def check_schema(data: dict) -> None:
    for key, kind in TOP_LEVEL.items():
        assert isinstance(data[key], kind), key
    assert data["visibility"] in VISIBILITIES and data["stdout_visibility"] in VISIBILITIES
    for test in data["tests"]:
        assert set(test) == set(TEST_FIELDS)
        for key, kind in TEST_FIELDS.items():
            assert isinstance(test[key], kind), (key, test)
        assert test["status"] in ("passed", "failed") and test["visibility"] in VISIBILITIES
        assert 0 <= test["score"] <= test["max_score"]


def run_gradescope(tmp_path, files: dict[str, str]) -> dict:
    submission = tmp_path / "submission"
    submission.mkdir()
    for name, text in files.items():
        (submission / name).write_text(text)
    results = tmp_path / "results" / "results.json"
    outcome = CliRunner().invoke(cli, ["gradescope", "--submission", str(submission), "--results", str(results)])
    assert outcome.exit_code == 0, outcome.output
    return json.loads(results.read_text())


def test_results_json_has_one_test_per_gradient_with_hints(tmp_path):
    data = run_gradescope(tmp_path, {
        "ex1_backprop_all.py": replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h"),
        "ex2_cross_entropy.py": EX2.solution_path.read_text(),
    })
    check_schema(data)
    assert len(data["tests"]) == 27 and data["score"] == 26.0
    by_name = {t["name"]: t for t in data["tests"]}
    assert by_name["ex1: dW2"]["status"] == "failed" and "transpose" in by_name["ex1: dW2"]["output"]
    assert by_name["ex1: dW2"]["number"] == "1.10" and by_name["ex2: dlogits"]["number"] == "2.1"
    assert by_name["ex2: dlogits"]["status"] == "passed"
    assert "25/26 passing" in data["output"]


def test_a_submission_with_no_exercise_says_what_to_upload(tmp_path):
    data = run_gradescope(tmp_path, {"notes.py": "x = 1\n"})
    check_schema(data)
    assert data["score"] == 0 and data["tests"] == []
    assert "ex1_backprop_all.py" in data["output"] and "notes.py" in data["output"]


def test_the_bundle_holds_executable_scripts_and_a_buildable_kit(tmp_path):
    bundle = tmp_path / "autograder.zip"
    outcome = CliRunner().invoke(cli, ["gradescope-bundle", str(bundle)])
    assert outcome.exit_code == 0, outcome.output
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        assert {"setup.sh", "run_autograder", "pyproject.toml", "setup.py", "data/names.txt", "grader/cli.py"} <= names
        for script in ("setup.sh", "run_autograder"):
            assert (zf.getinfo(script).external_attr >> 16) & stat.S_IXUSR
        assert "torch==2.13.0" in zf.read("setup.sh").decode() and "/cpu" in zf.read("setup.sh").decode()
        assert "grade gradescope" in zf.read("run_autograder").decode()
        zf.extractall(tmp_path / "source")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"),
         str(tmp_path / "source")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "wheel").glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        assert "grader/kit_files/data/names.txt" in zf.namelist()  # where the installed kit reads it
        assert "grader/grading.py" in zf.namelist()


def test_without_a_submission_folder_it_says_so_and_writes_nothing(tmp_path):
    results = tmp_path / "results" / "results.json"
    outcome = CliRunner().invoke(cli, ["gradescope", "--submission", str(tmp_path / "none"), "--results", str(results)])
    assert outcome.exit_code == 2 and "there is no submission folder" in outcome.output
    assert not results.exists()
