"""Gradescope: grade one submission in the autograder container, and build the autograder zip.

Gradescope runs `run_autograder` with the student's files in `/autograder/submission`
and reads `/autograder/results/results.json`: a `score`, an `execution_time`, an
`output`, and `tests`, here one per gradient (and one for exercise 4's training run).
"""

from __future__ import annotations

import json
import stat
import time
import zipfile
from pathlib import Path

from grader.compare import FileResult, Settings
from grader.exercises import BY_ID
from grader.execution import DEFAULT_TIMEOUT

SUBMISSION = Path("/autograder/submission")
RESULTS = Path("/autograder/results/results.json")


def _test(name: str, number: str, passed: bool, points: float, output: str) -> dict:
    """One entry of `tests`, in Gradescope's field names."""
    return {"name": name, "number": number, "score": points if passed else 0.0, "max_score": points,
            "status": "passed" if passed else "failed", "output": output, "visibility": "visible"}


def _tests(result: FileResult, exercise_number: int) -> list[dict]:
    tests = []
    for number, r in enumerate(result.results, start=1):
        lines = [f"{r.status.value}" + (f" (maxdiff {r.maxdiff:.1e})" if r.maxdiff else "")
                 + (f", line {r.line}" if r.line else "")]
        lines += [text for text in (r.hint, r.about, r.warning) if text]
        tests.append(_test(f"{result.exercise}: {r.name}", f"{exercise_number}.{number}", r.status.passed,
                           result.points, "\n".join(lines)))
    if result.training is not None:
        tests.append(_test(f"{result.exercise}: training run", f"{exercise_number}.{len(result.results) + 1}",
                           result.training.passed, result.points, result.training.describe()))
    return tests


def gradescope_results(*, submission: Path = SUBMISSION, timeout: float = DEFAULT_TIMEOUT,
                       settings: Settings = Settings(), sandbox: str = "auto") -> dict:
    """Grade every recognised file of one submission folder into Gradescope's results format.

    The student's code runs as it does in a batch: in the bubblewrap sandbox where it is
    installed (`setup.sh` installs it), else, run as root, as a user of its own with the
    process limit. When this returns, no process of the student's is left."""
    from grader.execution import current_executor, use_executor
    from grader.sandbox import Worker, bwrap_path

    bwrap = bwrap_path() if sandbox in ("auto", "bwrap") else None
    if sandbox == "bwrap" and bwrap is None:
        raise RuntimeError("--sandbox bwrap: bubblewrap is not installed or cannot make a sandbox here")
    worker, before = Worker(bwrap), current_executor()
    use_executor(worker)
    try:
        return _results(submission, timeout, settings)
    finally:
        use_executor(before)
        worker.close()  # it ends every process of the student's first


def _results(submission: Path, timeout: float, settings: Settings) -> dict:
    from grader.batch import Submission, discover, grade_submission
    from grader.reports import printable, text_report

    started = time.monotonic()
    tests, reports, score = [], [], 0.0
    found = discover(submission)
    # Every file belongs to the one student; discover() reads loose names as students, so regroup.
    chosen: dict[str, Submission] = {}
    for item in found.submissions:
        chosen.setdefault(item.exercise.id, item)
    for exercise_id in BY_ID:
        if exercise_id in chosen:
            result = grade_submission(chosen[exercise_id], timeout=timeout, settings=settings)
            number = list(BY_ID).index(exercise_id) + 1
            tests += _tests(result, number)
            reports.append(text_report(result))
            score += result.score
    if not chosen:
        names = ", ".join(f"{e.slug}.py" for e in BY_ID.values())
        output = f"No exercise was found in the submission. Upload one of: {names}."
    else:
        output = "\n\n".join(reports)
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
    """Write results.json whole or not at all (`batch.write_atomically`)."""
    from grader.batch import write_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(results, indent=2))


SETUP_SH = """#!/usr/bin/env bash
# Installs the backprop-ninja grader and a CPU build of torch in Gradescope's image.
set -euo pipefail
apt-get update -qq && apt-get install -y -qq python3 python3-pip bubblewrap >/dev/null
cd /autograder/source
python3 -m pip install --quiet torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
python3 -m pip install --quiet .
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grades /autograder/submission into /autograder/results/results.json.
cd /autograder/source
grade gradescope
"""


def write_bundle(path: Path) -> list[str]:
    """The autograder zip: setup.sh, run_autograder and the kit's source, at the zip's root."""
    import grader

    root = Path(grader.__file__).resolve().parent.parent
    # (setup.py puts the word list into the package when `pip install .` builds it)
    files = [root / "pyproject.toml", root / "setup.py", root / "README.md", root / "data" / "names.txt"]
    files += sorted((root / "grader").glob("*.py"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"the kit's source is incomplete here (missing {missing[0]}); build the bundle from a checkout")
    names = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16
            zf.writestr(info, text)
            names.append(name)
        for file in files:
            name = str(file.relative_to(root))
            zf.write(file, name)
            names.append(name)
    return names
