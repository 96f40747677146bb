"""One file, one verdict: the references a file is graded against are the same bits whichever
thread of whichever process computes them, and every thread that asks for one gets the same object."""

from __future__ import annotations

import subprocess
import sys
import threading

import torch

from grader import network, training
from grader.configs import SMALL

# Like `grade`: one thread set in the main thread; then the same reference computed in another
# thread, as a batch's grading threads compute theirs.
IN_ANOTHER_THREAD = """
import threading, torch
from grader import network
from grader.configs import SMALL
torch.set_num_threads(1)
here = network.reference(SMALL)
network.reference.cache_clear()
box = {}
thread = threading.Thread(target=lambda: box.update(ref=network.reference(SMALL)))
thread.start(); thread.join()
there = box["ref"]
differ = [name for name in here.gradients if not torch.equal(here.gradients[name], there.gradients[name])]
differ += [name for name in here.tensors if not torch.equal(here.tensors[name], there.tensors[name])]
print("differ:", ",".join(differ))
"""


def test_a_reference_is_the_same_bits_in_any_thread():
    ran = subprocess.run([sys.executable, "-c", IN_ANOTHER_THREAD], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "differ:", ran.stdout


def _asked_at_once(function, *args) -> list:
    function.cache_clear()
    start = threading.Barrier(3)
    got: list = []

    def ask():
        start.wait()
        got.append(function(*args))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return got


def test_threads_asking_at_once_get_one_reference():
    # The gradients injected into a student's run and those its answers are compared with are one
    # object: two computations racing had given a correct `dlogit_maxes` "2 of 7 entries wrong".
    got = _asked_at_once(network.reference, SMALL)
    assert len(got) == 3 and got[0] is got[1] is got[2]
    assert network.reference(SMALL, torch.float32) is got[0]
    runs = _asked_at_once(training.autograd_run)
    assert runs[0] is runs[1] is runs[2]


def test_computing_a_reference_leaves_the_callers_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        network.reference.cache_clear()
        network.reference(SMALL)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# An instructor's script: grade one file, then fork (a `multiprocessing` pool, as on Linux) for the
# rest. Each forked process starts a worker of its own: two processes reading replies from one
# worker's socket can split a reply between them and both wait for ever.
FORKED = """
import multiprocessing, os, sys
from grader.grading import grade_source
from grader.exercises import EX1
from grader.execution import LOCAL
sys.path.insert(0, "tests")
from conftest import SOLUTION, replace_line

WRONG = replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h")

INHERITED = None

def started():  # in each pool process, before it grades anything
    global INHERITED
    INHERITED = LOCAL.worker is not None

def score(source):
    result = grade_source(source=source, filename="ex1_backprop_all.py", exercise=EX1).score
    return INHERITED, LOCAL.worker.pid, result

_, parents, first = score(SOLUTION)
with multiprocessing.get_context("fork").Pool(2, initializer=started) as pool:
    runs = pool.map(score, [SOLUTION, WRONG, WRONG, SOLUTION], chunksize=1)
print(first, [r[2] for r in runs], any(r[0] for r in runs), any(r[1] == parents for r in runs), score(WRONG)[1] == parents)
"""


def test_processes_forked_after_grading_each_grade_with_their_own_worker():
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    ran = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, text=True, timeout=180, cwd=root)
    assert ran.returncode == 0, ran.stderr[-2000:]
    # Right verdicts; no pool process found the parent's worker or used it; the parent keeps its own.
    assert ran.stdout.split() == ["26.0", "[26.0,", "25.0,", "25.0,", "26.0]", "False", "False", "True"]
