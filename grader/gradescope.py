"""Gradescope: grade one submission in the autograder container, and build the autograder zip.

Gradescope runs `run_autograder` with the student's files in `<root>/submission` and reads
`<root>/results/results.json`: a `score`, an `execution_time`, an `output` that starts with a
score line, and `tests`: one per gradient that scores (and one for exercise 4's training run)
for every exercise of the assignment, submitted or not, so that the table has the same rows,
numbered the same way, for every student. The root is `/autograder` in Gradescope's container;
both scripts read it from `AUTOGRADER_ROOT`, so that they also run outside one.
"""

from __future__ import annotations

import json
import shlex
import stat
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path

from grader.compare import FileResult, Settings, TensorResult
from grader.exercises import BY_ID, Exercise, assigned_exercises
from grader.execution import DEFAULT_TIMEOUT

SUBMISSION = Path("/autograder/submission")
RESULTS = Path("/autograder/results/results.json")
TORCH = "torch==2.13.0"
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cpu"  # CPU builds: no CUDA libraries to download


def _points(value: float) -> str:
    return f"{value:g}"


def _test(name: str, number: str, passed: bool, points: float, output: str) -> dict:
    """One entry of `tests`, in Gradescope's field names."""
    return {"name": name, "number": number, "score": points if passed else 0.0, "max_score": points,
            "status": "passed" if passed else "failed", "output": output, "visibility": "visible"}


def _verdict(r: TensorResult) -> str:
    lines = [f"{r.status.value}" + (f" (maxdiff {r.maxdiff:.1e})" if r.maxdiff else "")
             + (f", line {r.line}" if r.line else "")]
    lines += [text for text in (r.hint, r.about, r.warning) if text]
    return "\n".join(lines)


def _tests(exercise: Exercise, result: FileResult | None, missing: str = "") -> list[dict]:
    """The exercise's tests: one per gradient that scores, in backward order, then exercise 4's
    training run. Names and numbers come from the exercise, not from what a file answered (an
    intermediate it wrote, a run that crashed), so they are the same with no file at all
    (`result` None; `missing` is then every test's output)."""
    number = list(BY_ID).index(exercise.id) + 1
    verdicts = {r.name: r for r in result.results if r.scored} if result is not None else {}
    scored = [t for t in exercise.graded if t in exercise.targets]
    tests = []
    for index, target in enumerate(scored, start=1):
        r = verdicts.get(target)
        if result is None:
            passed, output = False, missing
        elif r is None:
            passed, output = False, result.error or "no verdict: the file did not assign it"
        else:
            passed, output = r.status.passed, _verdict(r)
        tests.append(_test(f"{exercise.id}: {target}", f"{number}.{index}", passed, exercise.points, output))
    if exercise.kind == "training":
        training = result.training if result is not None else None
        if training is not None:
            passed, output = training.passed, training.describe()
        else:
            passed = False
            output = missing if result is None else f"training run: not run ({result.error or 'no gradients'})"
        tests.append(_test(f"{exercise.id}: training run", f"{number}.{len(scored) + 1}", passed, exercise.points,
                           output))
    return tests


def gradescope_results(*, submission: Path = SUBMISSION, timeout: float = DEFAULT_TIMEOUT,
                       settings: Settings = Settings(), sandbox: str = "auto",
                       exercises: tuple[str, ...] = tuple(BY_ID), log=None) -> dict:
    """Grade one submission folder into Gradescope's results format: tests for every exercise in
    `exercises` (the assignment), whether a file answers it or not; a file for another exercise
    is not graded. `log`, when given, is told where the student's code runs.

    The student's code runs as it does in a batch: in the bubblewrap sandbox where it is
    installed (`setup.sh` installs it), else, run as root, as a user of its own with the
    process limit. When this returns, no process of the student's is left."""
    from grader.execution import current_executor, use_executor
    from grader.sandbox import Worker, bwrap_path

    exercises = assigned_exercises(exercises)
    bwrap = bwrap_path() if sandbox in ("auto", "bwrap") else None
    if sandbox == "bwrap" and bwrap is None:
        raise RuntimeError("--sandbox bwrap: bubblewrap is not installed or cannot make a sandbox here")
    if log is not None:
        log("student code runs in the bubblewrap sandbox" if bwrap else
            "bubblewrap is not in use: student code runs without the sandbox, under its resource limits")
    worker, before = Worker(bwrap), current_executor()
    use_executor(worker)
    try:
        return _results(submission, timeout, settings, exercises)
    finally:
        use_executor(before)
        worker.close()  # it ends every process of the student's first


def not_submitted(exercise: Exercise) -> str:
    """What a student reads for an exercise of the assignment with no file."""
    return (f"{exercise.id} was not submitted: upload {exercise.slug}.py (or {exercise.slug}.ipynb) "
            f"to have it graded.")


def _results(submission: Path, timeout: float, settings: Settings, exercises: tuple[str, ...]) -> dict:
    from grader.batch import Submission, discover, grade_submission
    from grader.reports import printable, text_report

    started = time.monotonic()
    found = discover(submission)
    # Every file belongs to the one student; discover() reads loose names as students, so regroup.
    chosen: dict[str, Submission] = {}
    unassigned: list[Submission] = []
    seconds = list(found.duplicates)
    for item in found.submissions:
        if item.exercise.id not in exercises:
            unassigned.append(item)
        elif item.exercise.id in chosen:
            seconds.append(f"{item.name} ({item.exercise.id})")
        else:
            chosen[item.exercise.id] = item
    tests, reports, summary = [], [], []
    for exercise_id in exercises:
        exercise = BY_ID[exercise_id]
        if exercise_id in chosen:
            result = grade_submission(chosen[exercise_id], timeout=timeout, settings=settings)
            mine = _tests(exercise, result)
            reports.append(text_report(result))
            got = sum(test["score"] for test in mine)
            summary.append(f"{exercise_id} {_points(got)}/{_points(exercise.max_score)}")
        else:
            mine = _tests(exercise, None, not_submitted(exercise))
            reports.append(not_submitted(exercise))
            summary.append(f"{exercise_id} not submitted")
        tests += mine
    score = sum(test["score"] for test in tests)
    total = sum(test["max_score"] for test in tests)
    output = "\n\n".join([f"Score {_points(score)}/{_points(total)}: " + ", ".join(summary), *reports])
    if unassigned:
        output += (f"\n\nNot graded, because this assignment asks only for {', '.join(exercises)}: "
                   + printable(", ".join(f"{item.name} ({item.exercise.id})" for item in unassigned)) + ".")
    if seconds:
        output += ("\n\nNot graded, because another file for the same exercise was graded: "
                   + printable(", ".join(seconds)) + ".")
    if found.unrecognised:
        output += "\n\nNot graded (not recognised): " + printable(", ".join(found.unrecognised))
    if found.skipped:
        output += "\n\nNot read (unsafe): " + printable(", ".join(found.skipped))
    return {
        "score": score,
        "execution_time": int(round(time.monotonic() - started)),
        "output": output,
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


def write_results(results: dict, path: Path = RESULTS) -> None:
    """Write results.json whole or not at all (`outputs.write_atomically`)."""
    from grader.outputs import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(results, indent=2))


SETUP_SH = """#!/usr/bin/env bash
# Installs the backprop-ninja grader, a CPU build of torch and bubblewrap on Gradescope's base image
# (Ubuntu 22.04), the grader into a virtual environment of its own: $AUTOGRADER_ROOT/venv.
#   AUTOGRADER_ROOT   the autograder's folder (default /autograder); the bundle is in its source/
#   TORCH_INDEX_URL   where torch comes from (default: PyTorch's CPU builds); empty: pip's own configuration
set -euo pipefail
root="${AUTOGRADER_ROOT:-/autograder}"
venv="$root/venv"

# apt only for what the image lacks (dpkg-query exists where apt does).
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for package in python3 python3-venv python3-pip bubblewrap; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed"; then
            missing+=("$package")
        fi
    done
fi
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m venv "$venv"
index_url="${TORCH_INDEX_URL-__INDEX__}"
torch_index=()
if [ -n "$index_url" ]; then
    torch_index=(--index-url "$index_url")
fi
"$venv/bin/python" -m pip install --quiet __TORCH__ "${torch_index[@]}"
"$venv/bin/python" -m pip install --quiet "$root/source"
""".replace("__TORCH__", TORCH).replace("__INDEX__", TORCH_INDEX_URL)

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grades $AUTOGRADER_ROOT/submission (default /autograder) into results/results.json, with the
# grader setup.sh installed in the virtual environment.
set -euo pipefail
root="${AUTOGRADER_ROOT:-/autograder}"
exec "$root/venv/bin/grade" gradescope --submission "$root/submission" --results "$root/results/results.json"\
"""


def _seconds(value: float) -> str:
    """A number of seconds as the shell passes it on: `7`, `2.5` (never rounded)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def run_autograder(*, exercises: tuple[str, ...] | None = None, timeout: float | None = None,
                   config: bool = False) -> str:
    """The run_autograder script: `grade gradescope` with exactly the options chosen for the bundle
    (the exercises, the timeout, the bundled settings file), and the paths under the root."""
    options = ""
    if exercises:
        options += " --exercise " + shlex.quote(",".join(exercises))
    if timeout is not None:
        options += " --timeout " + shlex.quote(_seconds(timeout))
    if config:
        options += ' --config "$root/source/settings.toml"'
    return RUN_AUTOGRADER + options + "\n"


def write_bundle(path: Path, *, exercises: Iterable[str] | None = None, timeout: float | None = None,
                 config: Path | None = None) -> list[str]:
    """The autograder zip: setup.sh, run_autograder and the kit's source, at the zip's root, and the
    instructor's settings file as settings.toml. `exercises` (ids, or None: the kit's default of all),
    `timeout` and `config` become run_autograder's options. `ValueError` (one sentence) for an
    unknown exercise or an unusable settings file, before anything is written."""
    from grader.compare import load_settings
    from grader.kit import PACKAGE, kit_path

    if exercises is not None:
        exercises = assigned_exercises(exercises)
    settings_text = None
    if config is not None:
        load_settings(str(config))  # refused now, not when the first student submits
        settings_text = Path(config).read_bytes()
    # What `pip install .` builds the kit from: a checkout's files, or the installed package's copies
    # (the build puts them into grader/kit_files), so an installed kit can write the bundle too.
    files = {name: kit_path(*name.split("/")) for name in ("pyproject.toml", "setup.py", "README.md", "data/names.txt")}
    files |= {f"grader/{module.name}": module for module in sorted(PACKAGE.glob("*.py"))}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"the kit's source is incomplete here (missing {missing[0]}); build the bundle from a checkout")
    scripts = (("setup.sh", SETUP_SH),
               ("run_autograder", run_autograder(exercises=exercises, timeout=timeout, config=config is not None)))
    names = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in scripts:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            zf.writestr(info, text)
            names.append(name)
        if settings_text is not None:
            zf.writestr("settings.toml", settings_text)
            names.append("settings.toml")
        for name, file in files.items():
            zf.write(file, name)
            names.append(name)
    return names
