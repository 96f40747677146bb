"""Grade a file: recognise its exercise, run it against the reference, compare every target.

This is the keyword-only API that the CLI, the tests and notebooks call.
"""

from __future__ import annotations

from pathlib import Path

from grader.compare import FileResult, TensorResult, compare, Status
from grader.exercises import BY_ID, Exercise, recognise
from grader.execution import DEFAULT_TIMEOUT, SubmissionError, assigned_names, read_source, run_submission
from grader.network import reference

import ast


def detect_exercise(*, source: str, filename: str) -> Exercise | None:
    """The exercise a source answers, by file name or by the gradient names it assigns."""
    try:
        tree = ast.parse(source)
        assigned = set().union(*(assigned_names(node) for node in tree.body)) if tree.body else set()
    except SyntaxError:
        assigned = set()
    return recognise(filename, assigned)


def grade_source(*, source: str, filename: str, exercise: Exercise, timeout: float = DEFAULT_TIMEOUT) -> FileResult:
    """Grade Python source against an exercise; never raises for anything the student wrote."""
    config = exercise.configs[0]
    ref = reference(config)
    try:
        run = run_submission(
            source=source, filename=filename, reference=ref, targets=exercise.targets, timeout=timeout
        )
    except SyntaxError as exc:
        message = f"syntax error at line {exc.lineno}: {exc.msg}"
        results = tuple(
            TensorResult(
                name=t, tensor=exercise.tensor_of(t), status=Status.ERROR,
                expected_shape=tuple(ref.gradients[exercise.tensor_of(t)].shape), hint=message,
            )
            for t in exercise.targets
        )
        return FileResult(file=filename, exercise=exercise.id, results=results, error=message, points=exercise.points)
    results = tuple(
        compare(run.answers[t], ref.gradients[exercise.tensor_of(t)], exercise.tensor_of(t)) for t in exercise.targets
    )
    return FileResult(
        file=filename, exercise=exercise.id, results=results, error=run.error, points=exercise.points,
        output=run.output, notes=tuple(run.notes),
    )


def grade_file(*, path: str | Path, exercise: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> FileResult:
    """Grade one `.py` file. Raises `SubmissionError` (one sentence) when it cannot be graded at all."""
    path = str(path)
    if Path(path).is_dir():
        raise SubmissionError(f"{path} is a directory, not a Python file")
    if Path(path).suffix != ".py":
        raise SubmissionError(f"{path} is not a Python file (expected a .py file)")
    source = read_source(path)
    if exercise is not None:
        if exercise not in BY_ID:
            raise SubmissionError(f"there is no exercise {exercise!r}; choose one of {', '.join(BY_ID)}")
        chosen = BY_ID[exercise]
    else:
        chosen = detect_exercise(source=source, filename=path)
        if chosen is None:
            raise SubmissionError(
                f"cannot tell which exercise {path} answers: it assigns none of the gradient names; "
                f"name the file after the exercise (ex1_backprop_all.py) or pass --exercise"
            )
    return grade_source(source=source, filename=path, exercise=chosen, timeout=timeout)
