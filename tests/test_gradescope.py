"""Gradescope: results.json in the autograder's format, and the autograder zip."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.exercises import EX2, EX3, EX4

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


def run_gradescope(tmp_path, files: dict[str, str], *options: str) -> dict:
    submission = tmp_path / "submission"
    submission.mkdir(parents=True)
    for name, text in files.items():
        (submission / name).write_text(text)
    results = tmp_path / "results" / "results.json"
    outcome = CliRunner().invoke(cli, ["gradescope", "--submission", str(submission), "--results", str(results),
                                       *options])
    assert outcome.exit_code == 0, outcome.output
    return json.loads(results.read_text())


def names_and_numbers(data: dict, exercise: str) -> list[tuple[str, str, float]]:
    return [(t["name"], t["number"], t["max_score"]) for t in data["tests"] if t["name"].startswith(exercise + ":")]


def test_results_json_has_one_test_per_gradient_with_hints(tmp_path):
    data = run_gradescope(tmp_path, {
        "ex1_backprop_all.py": replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h"),
        "ex2_cross_entropy.py": EX2.solution_path.read_text(),
    })
    check_schema(data)
    assert len(data["tests"]) == 26 + 1 + 1 + 8 and data["score"] == 26.0  # ex3 and ex4 fail, unsubmitted
    assert sum(t["max_score"] for t in data["tests"]) == 36
    by_name = {t["name"]: t for t in data["tests"]}
    assert by_name["ex1: dW2"]["status"] == "failed" and "transpose" in by_name["ex1: dW2"]["output"]
    assert by_name["ex1: dW2"]["number"] == "1.10" and by_name["ex2: dlogits"]["number"] == "2.1"
    assert by_name["ex2: dlogits"]["status"] == "passed"
    assert "25/26 passing" in data["output"]
    assert data["output"].startswith("Score 26/36: ex1 25/26, ex2 1/1, ex3 not submitted, ex4 not submitted\n")


def test_a_submission_with_no_exercise_fails_every_test_and_says_what_to_upload(tmp_path):
    data = run_gradescope(tmp_path, {"notes.py": "x = 1\n"})
    check_schema(data)
    assert data["score"] == 0 and len(data["tests"]) == 36
    assert all(t["status"] == "failed" and t["score"] == 0 and "not submitted" in t["output"] for t in data["tests"])
    for slug in ("ex1_backprop_all", "ex2_cross_entropy", "ex3_batchnorm", "ex4_training"):
        assert f"upload {slug}.py (or {slug}.ipynb)" in data["output"]
    assert data["output"].startswith("Score 0/36: ex1 not submitted, ex2 not submitted, ex3 not submitted, "
                                     "ex4 not submitted\n")
    assert "Not graded (not recognised): notes.py" in data["output"]


def test_a_missing_exercise_has_the_tests_a_submitted_one_has_all_failed(tmp_path):
    """Gradescope's table keeps its rows: the same names, numbers and points whether exercise 4 is
    right, cannot run at all, or was not uploaded (then each test scores 0 and says so)."""
    right = run_gradescope(tmp_path / "right", {"ex4_training.py": EX4.solution_path.read_text()}, "--exercise", "ex3,ex4")
    broken = run_gradescope(tmp_path / "broken", {"ex4_training.py": "dC = (\n"}, "--exercise", "ex3", "--exercise", "ex4")
    missing = run_gradescope(tmp_path / "missing", {"ex3_batchnorm.py": EX3.solution_path.read_text()},
                             "--exercise", "ex4", "--exercise", "ex3")
    for data in (right, broken, missing):
        check_schema(data)
    rows = names_and_numbers(right, "ex4")
    assert len(rows) == len(EX4.targets) + 1 and rows[-1] == ("ex4: training run", "4.8", 1.0)
    assert names_and_numbers(broken, "ex4") == rows == names_and_numbers(missing, "ex4")
    assert names_and_numbers(right, "ex3") == [("ex3: dhprebn", "3.1", 1.0)] == names_and_numbers(missing, "ex3")
    assert right["score"] == 8 and all(t["status"] == "passed" for t in right["tests"] if t["name"].startswith("ex4"))
    assert broken["score"] == 0 and all(t["status"] == "failed" for t in broken["tests"])
    assert missing["score"] == 1
    unsubmitted = [t for t in missing["tests"] if t["name"].startswith("ex4")]
    assert all(t["status"] == "failed" and t["score"] == 0 and t["max_score"] == 1 for t in unsubmitted)
    assert all("ex4 was not submitted: upload ex4_training.py (or ex4_training.ipynb)" in t["output"]
               for t in unsubmitted)
    assert missing["output"].startswith("Score 1/9: ex3 1/1, ex4 not submitted\n")
    assert right["output"].startswith("Score 8/9: ex3 not submitted, ex4 8/8\n")


def test_an_upload_for_an_exercise_outside_the_assignment_is_not_graded(tmp_path):
    data = run_gradescope(tmp_path, {"ex2_cross_entropy.py": EX2.solution_path.read_text()}, "--exercise", "ex1")
    check_schema(data)
    assert {t["name"].split(":")[0] for t in data["tests"]} == {"ex1"} and len(data["tests"]) == 26
    assert data["score"] == 0 and sum(t["max_score"] for t in data["tests"]) == 26
    assert data["output"].startswith("Score 0/26: ex1 not submitted\n")
    assert "Not graded, because this assignment asks only for ex1: ex2_cross_entropy.py (ex2)." in data["output"]
    assert "dlogits" not in data["output"]  # nothing of it ran


def test_the_settings_file_is_what_grades(tmp_path):
    """A sum that keeps its axis has the right values in the wrong shape: it fails by default and
    passes when the instructor's settings only warn about shapes."""
    files = {"ex1_backprop_all.py": replace_line(SOLUTION, "db2 =", "db2 = dlogits.sum(0, keepdim=True)")}
    settings = tmp_path / "settings.toml"
    settings.write_text('[grading]\nshape_gate = "warn"\n')
    strict = run_gradescope(tmp_path / "strict", files, "--exercise", "ex1")
    lenient = run_gradescope(tmp_path / "lenient", files, "--exercise", "ex1", "--config", str(settings))
    assert strict["score"] == 25 and lenient["score"] == 26


@pytest.mark.parametrize("options, said", [
    (["--exercise", "ex9"], "there is no exercise 'ex9'; choose from ex1, ex2, ex3, ex4"),
    (["--exercise", "ex1,exercise2"], "there is no exercise 'exercise2'"),
    (["--exercise", ","], "--exercise names no exercise"),
    (["--config", "{tmp}/absent.toml"], "cannot be read"),
    (["--config", "{tmp}/broken.toml"], "is not valid TOML"),
    (["--config", "{tmp}/unknown.toml"], "unknown keys in [grading]: tolerance"),
])
def test_an_unknown_exercise_or_a_bad_settings_file_is_one_sentence_and_exit_2(tmp_path, options, said):
    (tmp_path / "broken.toml").write_text("[grading\n")
    (tmp_path / "unknown.toml").write_text("[grading]\ntolerance = 1\n")
    (tmp_path / "submission").mkdir()
    results = tmp_path / "results.json"
    options = [option.format(tmp=tmp_path) for option in options]
    outcome = CliRunner().invoke(cli, ["gradescope", "--submission", str(tmp_path / "submission"),
                                       "--results", str(results), *options])
    assert outcome.exit_code == 2 and said in outcome.output, outcome.output
    assert outcome.output.startswith("Error: ") and len(outcome.output.strip().splitlines()) == 1
    assert "Traceback" not in outcome.output and not results.exists()


def test_the_bundle_holds_executable_scripts_and_a_buildable_kit(tmp_path):
    bundle = tmp_path / "autograder.zip"
    outcome = CliRunner().invoke(cli, ["gradescope-bundle", str(bundle)])
    assert outcome.exit_code == 0, outcome.output
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
        assert {"setup.sh", "run_autograder", "pyproject.toml", "setup.py", "data/names.txt", "grader/cli.py"} <= names
        for script in ("setup.sh", "run_autograder"):
            assert (zf.getinfo(script).external_attr >> 16) & stat.S_IXUSR
        setup = zf.read("setup.sh").decode()
        assert "torch==2.13.0" in setup and "/cpu" in setup and "set -euo pipefail" in setup
        assert '"$root/venv/bin/grade" gradescope' in zf.read("run_autograder").decode()
        assert "settings.toml" not in names
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


def build_bundle(tmp_path, *options: str) -> Path:
    """A bundle built with `options`, unpacked as Gradescope does into <root>/source (scripts executable)."""
    bundle = tmp_path / "autograder.zip"
    outcome = CliRunner().invoke(cli, ["gradescope-bundle", str(bundle), *options])
    assert outcome.exit_code == 0, outcome.output
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(root / "source")
    for script in ("setup.sh", "run_autograder"):
        (root / "source" / script).chmod(0o755)
    return root


def fake_command(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("#!/usr/bin/env bash\n" + body)
    (folder / name).chmod(0o755)


@pytest.mark.parametrize("options, passed", [
    ([], []),
    (["--exercise", "ex2", "--timeout", "7"], ["--exercise", "ex2", "--timeout", "7"]),
    (["--exercise", "ex3", "--exercise", "ex1", "--timeout", "2.5", "--config", "{tmp}/settings.toml"],
     ["--exercise", "ex1,ex3", "--timeout", "2.5", "--config", "{root}/source/settings.toml"]),
], ids=["no-options", "exercise-and-timeout", "all-three"])
def test_run_autograder_passes_exactly_the_bundles_options(tmp_path, options, passed):
    settings = tmp_path / "settings.toml"
    settings.write_text('[grading]\nshape_gate = "warn"\n')
    root = build_bundle(tmp_path, *[option.format(tmp=tmp_path) for option in options])
    # The virtualenv's grade, replaced by one that records what it is given.
    fake_command(root / "venv" / "bin", "grade", 'printf "%s\\n" "$@" > "$AUTOGRADER_ROOT/arguments"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = subprocess.run(["bash", str(root / "source" / "run_autograder")], cwd=elsewhere, capture_output=True,
                         text=True, env={**os.environ, "AUTOGRADER_ROOT": str(root)}, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert (root / "arguments").read_text().splitlines() == [
        "gradescope", "--submission", f"{root}/submission", "--results", f"{root}/results/results.json",
        *[option.format(root=root) for option in passed]]
    bundled = root / "source" / "settings.toml"
    assert bundled.exists() == ("--config" in options)
    if bundled.exists():
        assert bundled.read_text() == settings.read_text()


@pytest.mark.parametrize("options, said", [
    (["--config", "{tmp}/broken.toml"], "is not valid TOML"),
    (["--config", "{tmp}/absent.toml"], "cannot be read"),
    (["--exercise", "ex5"], "there is no exercise 'ex5'"),
])
def test_a_bundle_with_a_bad_settings_file_or_exercise_is_refused_and_not_written(tmp_path, options, said):
    (tmp_path / "broken.toml").write_text('[grading]\nshape_gate = "sometimes"\nrtol = \n')
    bundle = tmp_path / "autograder.zip"
    outcome = CliRunner().invoke(cli, ["gradescope-bundle", str(bundle),
                                       *[option.format(tmp=tmp_path) for option in options]])
    assert outcome.exit_code == 2 and said in outcome.output, outcome.output
    assert outcome.output.startswith("Error: ") and len(outcome.output.strip().splitlines()) == 1
    assert not bundle.exists()


@pytest.mark.parametrize("index_url, missing, expected_index", [
    (None, "", ["--index-url", "https://download.pytorch.org/whl/cpu"]),
    ("https://mirror.example/whl", "bubblewrap", ["--index-url", "https://mirror.example/whl"]),
    ("", "python3-venv bubblewrap", []),
], ids=["default-index", "chosen-index", "pip-configuration"])
def test_setup_sh_installs_only_missing_packages_and_takes_torch_from_the_chosen_index(
        tmp_path, index_url, missing, expected_index):
    """setup.sh with python3, dpkg-query and apt-get replaced by commands that record their calls."""
    root = build_bundle(tmp_path)
    calls, fakes = tmp_path / "calls", tmp_path / "bin"
    venv_python = 'echo "python $*" >> "$CALLS"\n'
    fake_command(fakes, "python3", f"""echo "python3 $*" >> "$CALLS"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin"; printf '%s\\n' '#!/usr/bin/env bash' '{venv_python.strip()}' > "$3/bin/python"; chmod +x "$3/bin/python"; fi
""")
    fake_command(fakes, "dpkg-query", 'for package; do :; done\n'
                 'case " $MISSING " in *" $package "*) exit 1;; esac\nprintf "install ok installed"\n')
    fake_command(fakes, "apt-get", 'echo "apt-get $*" >> "$CALLS"\n')
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "CALLS": str(calls), "MISSING": missing,
           "PATH": f"{fakes}{os.pathsep}{os.environ['PATH']}"}
    env.pop("TORCH_INDEX_URL", None)
    if index_url is not None:
        env["TORCH_INDEX_URL"] = index_url
    ran = subprocess.run(["bash", str(root / "source" / "setup.sh")], cwd=tmp_path, capture_output=True, text=True,
                         env=env, timeout=60)
    assert ran.returncode == 0, ran.stderr
    made = calls.read_text().splitlines()
    apt = [line for line in made if line.startswith("apt-get")]
    if missing:
        assert apt == ["apt-get update -qq", f"apt-get install -y -qq --no-install-recommends {missing}"]
    else:
        assert apt == []
    assert f"python3 -m venv {root}/venv" in made
    pips = [line.split() for line in made if line.startswith("python -m pip install")]
    assert pips == [["python", "-m", "pip", "install", "--quiet", "torch==2.13.0", *expected_index],
                    ["python", "-m", "pip", "install", "--quiet", f"{root}/source"]]


@pytest.mark.slow
def test_setup_sh_and_run_autograder_grade_in_a_fresh_autograder_folder(tmp_path):
    """The whole life of the bundle outside a container: setup.sh makes the virtualenv (torch from
    pip's own configuration), run_autograder grades from another folder with that virtualenv's
    grade, and results.json holds every assigned exercise's tests."""
    from grader.sandbox import bwrap_path

    settings = tmp_path / "settings.toml"
    settings.write_text('[grading]\nshape_gate = "fail"\n')
    root = build_bundle(tmp_path, "--config", str(settings), "--timeout", "20")
    (root / "results").mkdir()
    (root / "submission").mkdir()
    (root / "submission" / "ex1_backprop_all.py").write_text(SOLUTION)
    wrong = EX2.solution_path.read_text().replace("/ n", "")  # forgets the batch mean
    assert wrong != EX2.solution_path.read_text()
    (root / "submission" / "ex2_cross_entropy.py").write_text(wrong)
    # Neither apt-get nor a grade found on PATH (this checkout's) may run: each leaves a mark and fails.
    marks, decoys = tmp_path / "marks", tmp_path / "decoys"
    marks.mkdir()
    for name in ("apt-get", "grade"):
        fake_command(decoys, name, f'touch "{marks}/{name}"\nexit 1\n')
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "TORCH_INDEX_URL": "", "PYTHONDONTWRITEBYTECODE": "1",
           "PATH": f"{decoys}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    started = time.monotonic()
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], cwd=elsewhere, env=env, capture_output=True,
                           text=True, timeout=900)
    assert setup.returncode == 0, setup.stderr[-3000:]
    where = subprocess.run([str(root / "venv" / "bin" / "python"), "-c", "import grader, torch; print(grader.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(root / "venv")), where
    ran = subprocess.run(["bash", str(root / "source" / "run_autograder")], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sorted(p.name for p in marks.iterdir()) == [], "apt-get or the checkout's grade ran"
    data = json.loads((root / "results" / "results.json").read_text())
    check_schema(data)
    counts = {}
    for test in data["tests"]:
        counts[test["name"].split(":")[0]] = counts.get(test["name"].split(":")[0], 0) + 1
    assert counts == {"ex1": 26, "ex2": 1, "ex3": 1, "ex4": 8}
    assert data["score"] == 26 and sum(t["max_score"] for t in data["tests"]) == 36
    unsubmitted = [t for t in data["tests"] if t["name"].startswith(("ex3", "ex4"))]
    assert all(t["status"] == "failed" and t["score"] == 0 and "not submitted" in t["output"] for t in unsubmitted)
    assert next(t for t in data["tests"] if t["name"] == "ex2: dlogits")["status"] == "failed"
    assert data["output"].startswith("Score 26/36: ex1 26/26, ex2 0/1, ex3 not submitted, ex4 not submitted\n")
    if bwrap_path() is not None:
        assert "student code runs in the bubblewrap sandbox" in ran.stdout, ran.stdout
    print(f"setup.sh and run_autograder took {time.monotonic() - started:.0f} s")
