"""Batch grading throughput and memory, against executing notebooks one by one with nbclient.

    python bench/bench_batch.py [--count 1000] [--mix both] [--correct solution] [--notebooks 6] [--jobs 2]

1. Generates `--count` exercise-1 submissions: 50% correct, 30% partly wrong,
   10% blank, 5% crashing and 5% looping (or, with the second mix, correct
   instead of looping), a folder per student. The correct files are the kit's
   solution, or with `--correct lecture` the lecture's own formulas (a near miss
   in the tanh line, a Python loop for dC), which is what students write.
2. Times `grade batch` on them and samples the memory of the whole process tree
   (the sum of PSS, so pages shared after a fork count once).
3. Times the path nbgrader and otter-grader take: one Jupyter kernel per
   notebook, executed with nbclient, on a sample of equivalent notebooks (the
   same student code, the reference forward pass and a comparison per gradient).

Targets on a 2-core machine, 1,000 submissions, `--jobs 2`, bubblewrap, `--timeout 1`:
at least 60 submissions/s with the looping files and 100/s without, peak memory
under 1 GB. `--compare` times another installation on the same class in the same
run. Step 3 (`--notebooks N`) needs `nbclient` and `ipykernel`.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_grade import compile_package, grade_script

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = (ROOT / "solutions" / "ex1_backprop_all.py").read_text()
STUB = (ROOT / "exercises" / "ex1_backprop_all.py").read_text()

MISTAKES = [
    ("dW2 =", "dW2 = dlogits.T @ h"),
    ("dbngain =", "dbngain = (bnraw * dhpreact).sum(0)"),
    ("db2 =", "db2 = dlogits"),
    ("dprobs =", "dprobs = -(1.0 / probs) * dlogprobs"),
    ("dbndiff2 =", "dbndiff2 = (1.0/n)*torch.ones_like(bndiff2) * dbnvar"),
    ("dbndiff =", "dbndiff = bnvar_inv * dbnraw"),
    ("dlogit_maxes =", "dlogit_maxes = dnorm_logits.sum(1, keepdim=True)"),
    ("dhpreact =", "dhpreact = (1.0 - h**2) * dh"),
    ("dlogprobs =", "dlogprobs = -1.0/32 * F.one_hot(Yb, num_classes=vocab_size).float()"),
]


def replace_line(source: str, prefix: str, new: str) -> str:
    return "\n".join(new if line.startswith(prefix) else line for line in source.splitlines()) + "\n"


# The kit's solution is bitwise equal to autograd; students write the lecture's formulas, which are not
# all (its tanh backward is a near miss: rounding), and some of its gradients in two statements or a loop.
LECTURE_FORMULAS = [
    ("dlogprobs =", "dlogprobs = torch.zeros_like(logprobs)\ndlogprobs[range(n), Yb] = -1.0/n"),
    ("dcounts =", "dcounts = counts_sum_inv * dprobs\ndcounts += torch.ones_like(counts) * dcounts_sum"),
    ("dhpreact =", "dhpreact = (1.0 - h**2) * dh"),
    ("dC =", "dC = torch.zeros_like(C)\nfor k in range(Xb.shape[0]):\n    for j in range(Xb.shape[1]):\n"
             "        ix = Xb[k, j]\n        dC[ix] += demb[k, j]"),
]


def lecture_style(source: str) -> str:
    for prefix, new in LECTURE_FORMULAS:
        source = replace_line(source, prefix, new)
    return source


def make_class(folder: Path, count: int, loops: bool = True, lecture: bool = False) -> dict[str, int]:
    """A class of `count` submissions in fixed proportions; returns how many of each kind. `lecture`:
    the correct and wrong files start from the lecture's formulas, not the kit's solution."""
    rng = random.Random(0)
    solution = lecture_style(SOLUTION) if lecture else SOLUTION
    kinds = (["correct"] * 50 + ["wrong"] * 30 + ["blank"] * 10 + ["crash"] * 5 + ["loop" if loops else "correct"] * 5)
    made: dict[str, int] = {}
    for i in range(count):
        kind = kinds[i % len(kinds)]
        source = solution
        if kind == "wrong":
            for prefix, new in rng.sample(MISTAKES, rng.randint(1, 3)):
                source = replace_line(source, prefix, new)
        elif kind == "blank":
            source = STUB
        elif kind == "crash":
            source = replace_line(source, "dh =", "dh = dlogits @ W2")
        elif kind == "loop":
            source = replace_line(source, "dh =", "while True: pass")
        (folder / f"student{i:04d}").mkdir(parents=True)
        (folder / f"student{i:04d}" / "ex1_backprop_all.py").write_text(source)
        made[kind] = made.get(kind, 0) + 1
    return made


def tree_pss_kb(pid: int) -> int:
    """The summed PSS of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo += children.get(current, [])
        try:
            for line in open(f"/proc/{current}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def grade_command(other: Path | None) -> list[str]:
    """`grade`, or another installation's `grade` (say, an older commit installed in a virtualenv)."""
    if other is not None:
        return [str(other)]
    return [grade_script()]


def file_errors(out: Path) -> int:
    """How many submissions of a finished batch ended in a whole-file error (time limits included):
    two installations graded the same class alike only if these agree."""
    import json

    lines = (out / "results.jsonl").read_text().splitlines()
    return sum(bool(json.loads(line)["result"].get("error")) for line in lines if line.strip())


def time_batch(folder: Path, out: Path, jobs: int, sandbox: str, timeout: float,
               other: Path | None = None) -> tuple[float, int]:
    command = [*grade_command(other), "batch", str(folder), "--out", str(out), "--jobs", str(jobs),
               "--sandbox", sandbox, "--timeout", str(timeout)]
    peak = [0]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def sample():  # once a second: a sample reads the page tables of every process (~20 ms of CPU)
        while process.poll() is None:
            peak[0] = max(peak[0], tree_pss_kb(process.pid))
            time.sleep(1.0)

    sampler = threading.Thread(target=sample)
    sampler.start()
    process.wait()
    elapsed = time.perf_counter() - start
    sampler.join()
    if process.returncode != 0:
        sys.exit(f"grade batch failed with exit status {process.returncode}")
    return elapsed, peak[0]


def time_outputs(out: Path) -> float:
    """Seconds to build a finished batch's outputs again, in a process that has imported the grader."""
    code = ("import time, pathlib, sys; from grader.classbook import write_outputs; start = time.perf_counter(); "
            "write_outputs(pathlib.Path(sys.argv[1]), log=lambda text: None); print(time.perf_counter() - start)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, check=True)
    return float(done.stdout)


NOTEBOOK_SETUP = """import torch
import torch.nn.functional as F
from grader.network import reference
ref = reference()
globals().update(ref.scope())
"""
NOTEBOOK_CHECK = """results = {}
for name, expected in ((t, ref.gradients[t[1:]]) for t in %r):
    got = globals().get(name)
    results[name] = isinstance(got, torch.Tensor) and got.shape == expected.shape and bool(torch.allclose(got, expected))
print(sum(results.values()), "of", len(results), "pass")
"""


def time_nbclient(folder: Path, sample: int, timeout: float) -> float | None:
    """Seconds per notebook, executing each in a fresh kernel as nbgrader and otter-grader do.

    The sample is spread over the class's mix (which repeats every 100 students), looping
    submissions included: their cell gets the same time limit as `grade batch` gives a run."""
    try:
        import nbclient
        import nbformat
    except ImportError:
        print("nbclient is not installed: skipping the notebook comparison (pip install nbclient ipykernel)")
        return None
    from grader.exercises import EX1

    paths = sorted(folder.glob("*/ex1_backprop_all.py"))
    paths = [paths[(5 + k * 100 // sample) % len(paths)] for k in range(sample)]
    times = []
    for path in paths:
        source = path.read_text()
        notebook = nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_code_cell(NOTEBOOK_SETUP),
            nbformat.v4.new_code_cell(source),
            nbformat.v4.new_code_cell(NOTEBOOK_CHECK % (EX1.targets,)),
        ])
        start = time.perf_counter()
        # The student's cell gets the same limit as a run in `grade batch`; a loop is interrupted there.
        client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True,
                                         interrupt_on_timeout=True)
        with client.setup_kernel():
            for index, cell in enumerate(notebook.cells):
                client.timeout = timeout if index == 1 else 60
                client.execute_cell(cell, index)
        times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--notebooks", type=int, default=0,
                        help="Also time this many notebooks through nbclient (0: skip).")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--sandbox", default="auto", choices=["auto", "bwrap", "none"])
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--mix", default="both", choices=["both", "loops", "no-loops"],
                        help="The class with 5%% looping submissions, without them (correct instead), or both.")
    parser.add_argument("--correct", default="solution", choices=["solution", "lecture", "both"],
                        help="Correct files as the kit's solution (bitwise equal to autograd), in the lecture's "
                             "formulas (as students write them: a near miss, loops), or both classes in turn.")
    parser.add_argument("--compare", type=Path, metavar="GRADE",
                        help="Also time another installation's `grade` on the same class, e.g. an older commit: "
                             "`git archive OLD | tar -x -C /tmp/old; python -m venv --system-site-packages /tmp/v; "
                             "/tmp/v/bin/pip install --no-deps /tmp/old`, then --compare /tmp/v/bin/grade.")
    args = parser.parse_args()
    compile_package()
    mixes = {"both": [True, False], "loops": [True], "no-loops": [False]}[args.mix]
    styles = {"both": [False, True], "solution": [False], "lecture": [True]}[args.correct]
    for lecture, loops in ((lecture, loops) for lecture in styles for loops in mixes):
        target = 60 if loops else 100
        with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
            folder = Path(scratch) / "class"
            made = make_class(folder, args.count, loops=loops, lecture=lecture)
            print(f"{args.count} submissions{' in the lecture' + chr(39) + 's formulas' if lecture else ''}: "
                  + ", ".join(f"{n} {kind}" for kind, n in made.items())
                  + f"; --timeout {args.timeout:g} s, --jobs {args.jobs}, --sandbox {args.sandbox}")
            elapsed, peak_kb = time_batch(folder, Path(scratch) / "out", args.jobs, args.sandbox, args.timeout)
            rate = args.count / elapsed
            print(f"  {'ok  ' if rate >= target else 'MISS'} grade batch: {elapsed:.1f} s, {rate:.1f} submissions/s "
                  f"(target: at least {target}/s); {file_errors(Path(scratch) / 'out')} file errors")
            print(f"  {'ok  ' if peak_kb < 1 << 20 else 'MISS'} peak memory {peak_kb / 1024:.0f} MB "
                  f"(PSS of the whole tree; target: under 1 GB)")
            print(f"  of which the outputs: {time_outputs(Path(scratch) / 'out'):.2f} s (gradebook, a .txt, .json "
                  f"and .html feedback per student, summary and report.html, written again from results.jsonl)")
            if args.compare:
                old, old_kb = time_batch(folder, Path(scratch) / "out-compared", args.jobs, args.sandbox,
                                         args.timeout, other=args.compare)
                print(f"  {args.compare}: {old:.1f} s, {args.count / old:.1f} submissions/s, peak memory "
                      f"{old_kb / 1024:.0f} MB (PSS), {file_errors(Path(scratch) / 'out-compared')} file errors; "
                      f"this installation does {rate / (args.count / old):.2f}x its rate")
            per_notebook = time_nbclient(folder, args.notebooks, args.timeout) if args.notebooks else None
            if per_notebook:
                print(f"  nbclient, a kernel per notebook: {per_notebook:.2f} s per notebook, "
                      f"{1 / per_notebook:.2f} submissions/s (sample of {args.notebooks} across the same mix); "
                      f"grade batch is {rate * per_notebook:.0f}x faster")


if __name__ == "__main__":
    main()
