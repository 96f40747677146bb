"""Shared fixtures: the solution's source, and copies of it with one line changed."""

from __future__ import annotations


import pytest
import torch

from grader.exercises import EX1
from grader.grading import grade_source

torch.set_num_threads(1)  # as the CLI does: forking stays safe and tiny tensors stay fast

SOLUTION = EX1.solution_path.read_text(encoding="utf-8")


def python_prints(code: str) -> str:
    """What a fresh interpreter prints running `code` (which must succeed): for what a process does
    from its start, which this test process is long past."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def replace_line(source: str, prefix: str, new: str) -> str:
    """The source with the one line that starts with `prefix` replaced by `new`."""
    lines = source.splitlines()
    hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert len(hits) == 1, f"expected one line starting with {prefix!r}, found {len(hits)}"
    lines[hits[0]] = new
    return "\n".join(lines) + "\n"


def grade_text(source: str, *, filename: str = "ex1_backprop_all.py", exercise=EX1, timeout: float = 5.0):
    return grade_source(source=source, filename=filename, exercise=exercise, timeout=timeout)


def by_name(result) -> dict:
    return {r.name: r for r in result.results}


@pytest.fixture
def solution() -> str:
    return SOLUTION


ESCAPE = ("os", "signal", "ctypes", "gc", "sys")


@pytest.fixture
def escaped(monkeypatch):
    """Student code that has escaped the guard: `os`, `signal`, `ctypes`, `gc` and `sys` are in its
    scope, as if an attack had got past `grader.policy`. Every worker started meanwhile (a batch's,
    Gradescope's, and the one `grade FILE` uses here) runs student code so: the layers under the
    guard (the clean process, the pipes' reader, process limits, users, the sandbox) must hold."""
    from grader import policy
    from grader.execution import current_executor, use_executor
    from grader.sandbox import Worker

    monkeypatch.setattr(policy, "ESCAPED", ESCAPE)
    worker = Worker(None, fork=True)
    before = current_executor()
    use_executor(worker)
    yield worker
    use_executor(before)
    worker.close()


# Settings files an instructor might get wrong, and the words the one-sentence error must hold.
BAD_SETTINGS = [
    ("[grading]\nrtol = 'x'\n", "must be numbers"),
    ("[grading]\nspeed = 1\n", "unknown keys in [grading]: speed"),
    ("[grading]\nspeed = 1\ncolour = 2\n", "unknown keys in [grading]: colour, speed"),
    ("[exercises]\nex1 = 3\n", "[exercises.ex1] allow in"),
    ("[grading]\nshape_gate = 'sometimes'\n", "must be \"fail\" or \"warn\", not 'sometimes'"),
    ("[exercises.ex1]\nallow = 'softmax'\n", "[exercises.ex1] allow"),
    ("[exercises.ex1]\nallow = [1]\n", "must be a list of names"),
    ("[grading\n", "is not valid TOML"),
]
