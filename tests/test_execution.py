"""Running untrusted student code: every line judged alone, and nothing the code does breaks grading."""

from __future__ import annotations

import os
import time

import pytest

from grader.compare import Status

from conftest import SOLUTION, by_name, grade_text, python_prints, replace_line


def statuses(result) -> dict:
    return {r.name: r.status for r in result.results}


def test_syntax_error_is_a_file_level_error_listing_every_name(solution):
    result = grade_text(replace_line(solution, "dh =", "dh = dlogits @@ W2.T"))
    assert result.error and "syntax error at line" in result.error
    assert len(result.results) == 26
    assert set(statuses(result).values()) == {Status.ERROR}


def test_infinite_loop_is_stopped_at_the_smallest_size_and_earlier_lines_kept(solution):
    """An endless loop costs the smallest size's share of a statement's CPU time, not the statement's
    whole limit, let alone the file's --timeout."""
    from grader.execution import FIRST_SIZE_CPU, statement_cpu

    source = replace_line(solution, "dh =", "while True: pass")
    start = time.monotonic()
    result = grade_text(source, timeout=5.0)
    assert time.monotonic() - start < 4.5 and FIRST_SIZE_CPU < statement_cpu(5.0) < 5
    assert f"line 22 used more than {FIRST_SIZE_CPU:.2g} s of CPU" in result.error
    got = statuses(result)
    assert got["dlogits"] is Status.EXACT  # answered before the loop
    assert got["dW2"] is Status.ERROR and by_name(result)["dW2"].hint == "not reached (time limit at line 22)"


def test_once_the_smallest_size_runs_out_of_time_the_larger_ones_get_only_a_sliver(solution):
    """The loop ran out of time at the smallest size: each larger size (the lecture's, whose printed
    output the report keeps) gets a hundredth of a second of it, not what is left of the limit."""
    source = replace_line(solution, "dh =", "i = 0\nwhile True:\n    i += 1\n    if i % 100000 == 0:\n        print(i)")
    result = grade_text(source, timeout=5.0)
    assert "the limit for one statement" in result.error
    assert len(result.output.split()) < 10, result.output  # 0.01 s: a couple of hundred thousand turns at most


def test_a_loop_that_catches_the_stop_inside_it_is_still_stopped_with_the_limit_named(solution):
    """A bare `except:` swallows the timer's exception (here, to leave the loop as if it were done):
    the statement has run out of time all the same, and says so (not "right except in 3 entries")."""
    source = replace_line(solution, "dh =", "dh = dlogits @ W2.T\nwhile True:\n    try:\n"
                          "        sum(range(1000))\n    except:\n        break")
    result = grade_text(source, timeout=5.0)
    assert "line 23 used more than" in result.error and "the limit for one statement" in result.error
    assert statuses(result)["dh"] is Status.EXACT and statuses(result)["dW2"] is Status.ERROR


def test_a_slow_but_right_statement_is_graded(solution):
    """A triple Python loop for a matrix product takes most of a second at the lecture's sizes: slow,
    right, and within a statement's limit at the default --timeout."""
    source = replace_line(solution, "dW1 =", "dW1 = torch.zeros_like(W1)\nfor i in range(W1.shape[0]):\n"
                          "    for j in range(W1.shape[1]):\n        for k in range(n):\n"
                          "            dW1[i, j] += embcat[k, i] * dhprebn[k, j]")
    result = grade_text(source)
    assert result.error is None and statuses(result)["dW1"].passed


def test_a_right_line_that_fills_fresh_memory_is_not_taken_for_an_endless_loop(solution):
    """Building a 300 MB string costs a few hundredths of a second of the code's own time and most of
    a second in the kernel, faulting in fresh pages: far more than the smallest size's tenth of a second
    of CPU, were the kernel's time counted. Only the code's own time counts toward a statement's limit."""
    source = replace_line(solution, "dh =", "dh = dlogits @ W2.T\nscratch = len(b'y' * 300_000_000)")
    result = grade_text(source, timeout=5.0)
    assert result.error is None and statuses(result)["dh"] is Status.EXACT and statuses(result)["dC"].passed


def test_a_hard_coded_size_is_caught_even_when_the_lectures_run_is_stopped_at_the_end(solution):
    """Stopping the lecture's run on purpose (a loop only when n == 32) does not hide what the other
    sizes found: their runs went on, and they count."""
    source = replace_line(solution, "dlogprobs =", "dlogprobs = torch.zeros_like(logprobs)\n"
                          "dlogprobs[range(n), Yb] = -1.0/32") + "if n == 32:\n    while True: pass\n"
    result = grade_text(source, timeout=5.0)
    assert "the limit for one statement" in result.error
    assert statuses(result)["dlogprobs"] is Status.FAIL and "32" in by_name(result)["dlogprobs"].hint
    assert statuses(result)["dprobs"] is Status.EXACT


def test_a_module_imported_on_first_use_is_not_charged_to_the_statement(tmp_path):
    """torch loads some modules the first time an allowed function runs (sympy for
    `torch.broadcast_shapes`); that import is not the student's loop, and does not count."""
    (tmp_path / "slow_to_import.py").write_text("import time\nend = time.process_time() + 0.3\n"
                                                 "while time.process_time() < end: pass\n")
    probe = (
        "import builtins, signal, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from grader import execution\n"
        "signal.signal(execution.STATEMENT_SIGNAL, execution._statement_timer)\n"
        "builtins.__import__ = execution._untimed_import\n"
        "execution._run_student(compile('import slow_to_import', 'f', 'exec'), {}, 0.1)\n"
        "try:\n"
        "    execution._run_student(compile('while True: pass', 'f', 'exec'), {}, 0.1)\n"
        "except execution.StatementTimeout:\n"
        "    print('stopped')\n"
    )
    assert python_prints(probe) == "stopped"  # the import ran whole; the loop did not


def test_a_loop_that_catches_the_statement_limit_still_ends_within_the_file_time_limit(solution):
    """Catching the stop buys nothing: the timer fires again, and the file's --timeout is the last word."""
    source = replace_line(solution, "dh =", "while True:\n    try:\n        while True: pass\n    except BaseException: pass")
    start = time.monotonic()
    result = grade_text(source, timeout=1.0)
    assert time.monotonic() - start < 5
    assert ("time limit of 1 s exceeded" in result.error or "the limit for one statement" in result.error)
    assert "line 22" in result.error
    assert statuses(result)["dlogits"] is Status.EXACT and statuses(result)["dW2"] is Status.ERROR


def test_a_slow_but_finite_python_loop_is_graded(solution):
    """The lecture's own loop for dC, run slowly on purpose, stays within a statement's limit."""
    source = replace_line(solution, "dC =", "dC = torch.zeros_like(C)\nfor k in range(Xb.shape[0]):\n"
                          "    for j in range(Xb.shape[1]):\n        for _ in range(20):\n"
                          "            pass\n        dC[Xb[k, j]] += demb[k, j]")
    assert statuses(grade_text(source, timeout=5.0))["dC"] is Status.EXACT


def test_system_exit_stops_the_file_with_a_clear_error(solution):
    result = grade_text(replace_line(solution, "dh =", "raise SystemExit"))
    assert "line 22 calls exit()" in result.error
    assert statuses(result)["dlogits"] is Status.EXACT
    assert statuses(result)["dW2"] is Status.ERROR


def test_os_exit_self_kill_and_segfault_are_refused_by_the_guard(solution):
    for line in ("import os; os._exit(0)", "import ctypes; ctypes.string_at(0)"):
        result = grade_text(replace_line(solution, "dh =", line))
        assert result.error is None and any("is not allowed here" in note for note in result.notes)
        assert statuses(result)["dlogits"] is Status.EXACT and statuses(result)["dW2"] is Status.EXACT


def test_os_exit_self_kill_and_segfault_past_the_guard_are_caught_and_earlier_answers_kept(solution, escaped):
    for line in (
        "os.abort()",
        "os.kill(os.getpid(), signal.SIGKILL)",
        "ctypes.string_at(0)",  # a segfault
    ):
        result = grade_text(replace_line(solution, "dh =", line))
        assert "ended abruptly at line 22" in result.error
        assert statuses(result)["dlogits"] is Status.EXACT


def test_a_crashing_line_is_an_error_and_the_others_are_still_graded(solution):
    result = grade_text(replace_line(solution, "dh =", "dh = dlogits @ W2"))
    got = by_name(result)
    assert got["dh"].status is Status.ERROR
    assert got["dh"].line == 22 and "RuntimeError" in got["dh"].hint
    assert result.error is None
    assert [n for n, s in statuses(result).items() if not s.passed] == ["dh"]


def test_a_missing_line_is_missing_and_the_rest_still_pass(solution):
    result = grade_text(replace_line(solution, "dbnvar =", ""))
    assert [n for n, s in statuses(result).items() if not s.passed] == ["dbnvar"]
    assert statuses(result)["dbnvar"] is Status.MISSING


def test_aliasing_a_gradient_cannot_change_another_verdict(solution):
    source = replace_line(
        solution, "dlogits =",
        "dlogits = dnorm_logits\ndlogits += F.one_hot(logits.max(1).indices, num_classes=vocab_size) * dlogit_maxes",
    )
    result = statuses(grade_text(source))
    # Only the aliased gradient fails (its variable was changed); every verdict after it stands.
    assert [name for name, status in result.items() if not status.passed] == ["dnorm_logits"]


def test_changing_forward_tensors_in_place_does_not_leak_into_later_lines(solution):
    source = replace_line(solution, "dh =", "dh = dlogits @ W2.T; h.mul_(0); W1.zero_()")
    assert all(r.status.passed for r in grade_text(source).results)


def test_student_cannot_change_the_comparison(solution):
    source = replace_line(solution, "dprobs =", "torch.allclose = torch.equal = lambda *a, **k: True; dprobs = probs")
    assert statuses(grade_text(source))["dprobs"] is Status.FAIL


def test_a_flood_of_output_is_cut_not_fatal(solution):
    source = replace_line(solution, "dh =", "dh = dlogits @ W2.T\nprint('x' * 50_000_000)\nimport os; os.write(1, b'y' * 10_000_000)")
    result = grade_text(source)
    assert all(r.status.passed for r in result.results)
    assert len(result.output) < 5000 and "output cut" in result.output


def test_values_that_are_not_float_tensors_fail_with_a_reason(solution):
    cases = {
        "db2 = 0.5": "a float, not a tensor",
        "db2 = None": "None, not a tensor",
        "db2 = dlogits.sum(0).numpy()": "numpy.ndarray of shape (27,)",
        "db2 = dlogits.sum(0).double()": "dtype float64",
        "db2 = dlogits.sum(0) / 0 * 0": "NaN",
    }
    for line, expected in cases.items():
        result = by_name(grade_text(replace_line(solution, "db2 =", line)))["db2"]
        assert result.status is Status.FAIL, line
        assert expected in result.hint, (line, result.hint)


def test_a_helper_line_that_raises_is_reported_as_a_note(solution):
    result = grade_text(solution + "cmp('dC', dC, C)\n")
    assert all(r.status.passed for r in result.results)
    assert any("NameError" in note for note in result.notes)


def test_a_file_is_graded_in_one_student_process_chained_and_float64_runs_included(solution):
    from grader.execution import LOCAL, current_executor, use_executor

    spawned = []

    class Counting:
        def spawn(self, job, timeout, shared=(None, ())):
            spawned.append(job)
            return LOCAL.spawn(job, timeout, shared)

        def prepare(self, shared=(None, ())):
            LOCAL.prepare(shared)

        def release(self, handle):
            LOCAL.release(handle)

        def reap(self, handle):
            return LOCAL.reap(handle)

    before = current_executor()
    use_executor(Counting())
    try:
        # A wrong line (a chained run) and the lecture's tanh formula (a near miss: a float64 run).
        source = replace_line(solution, "dW2 =", "dW2 = dlogits.T @ h")
        source = replace_line(source, "dhpreact =", "dhpreact = (1.0 - h**2) * dh")
        result = grade_text(source)
    finally:
        use_executor(before)
    assert statuses(result)["dW2"] is Status.FAIL and statuses(result)["dhpreact"] is Status.APPROX
    assert "float64" in by_name(result)["dhpreact"].hint  # the float64 run did happen
    assert spawned == ["execute"]


GLOBALS = {  # what replaces `dh = dlogits @ W2.T`, and where `dh` is then answered (None: missing)
    "never called": ("def never():\n    global dh\n    dh = dlogits @ W2.T", None),
    "called through another": ("def inner():\n    global dh\n    dh = dlogits @ W2.T\ndef outer():\n    inner()\n"
                               "outer()", "outer()"),
    "called, only reads it": ("dh = dlogits @ W2.T\ndef show():\n    global dh\n    print(dh.shape)\nshow()",
                              "dh = dlogits @ W2.T"),
    "a local of the same name": ("dh = dlogits @ W2.T\ndef helper(x):\n    dh = x * 2\n    return dh\n"
                                 "tmp = helper(dlogits)", "dh = dlogits @ W2.T"),
}


@pytest.mark.parametrize("case", sorted(GLOBALS))
def test_a_function_answers_a_gradient_only_when_called_and_assigning_it_as_a_global(case):
    text, answered_at = GLOBALS[case]
    source = replace_line(SOLUTION, "dh = ", text)
    row = next(r for r in grade_text(source).results if r.name == "dh")
    if answered_at is None:
        assert row.status is Status.MISSING and row.line is None
    else:
        assert row.status is Status.EXACT and source.splitlines()[row.line - 1] == answered_at


@pytest.mark.parametrize("reading", [
    "parse(SOURCE, 'ex1_backprop_all.py')",  # the grader's own parse of a file
    "assigned_names(ast.parse(SOURCE).body[0])",  # a notebook cell's statement, asked what it assigns
    # its statements compiled for the student process, with every other cache emptied after
    "precompile(plan(SOURCE, 'f.py', EX1.graded), SOURCE, 'f.py'); "
    "[f.cache_clear() for f in (plan, _parse_once, facts)]",
    "encode_once(torch.ones(3))",  # a reference gradient's bytes, kept for the next student process
])
def test_a_process_that_has_read_a_submission_never_forks_a_worker(reading):
    """A worker forked from a process inherits its memory: once a submission's text or syntax tree is
    in a cache there, workers must start as new interpreters instead."""
    probe = ("import ast, torch\nfrom grader.execution import _clean, _parse_once, assigned_names, encode_once, "
             "facts, parse, plan, precompile\nfrom grader.exercises import EX1\n"
             f"SOURCE = {SOLUTION!r}\nassert _clean()\n{reading}\nprint('clean' if _clean() else 'not clean')\n")
    assert python_prints(probe) == "not clean"


def test_a_statement_compiled_for_one_file_never_stands_in_for_another(solution):
    """The grader compiles each statement once for a whole class, keyed by its text and place: a
    line changed at the same place, a file with old Mac line endings (a lone CR ends a line for
    the parser), or a file of another name each get code of their own."""
    assert grade_text(solution).error is None
    wrong = replace_line(solution, "dW2 =", "dW2 = 2*h.T@dlogits")  # as long as the right line
    assert len(wrong) == len(solution) and statuses(grade_text(wrong))["dW2"] is Status.FAIL
    assert statuses(grade_text(solution))["dW2"] is Status.EXACT
    cr = replace_line(solution, "dW2 =", "dW2 = h.T @ dlogits * 2").replace("\n", "\r")
    rows = by_name(grade_text(cr))
    assert rows["dW2"].status is Status.FAIL and rows["dh"].status is Status.EXACT
    assert solution.splitlines()[rows["dW2"].line - 1].startswith("dW2 =")
    # A crash deep inside a loop is reported at its own line, under whichever name the file has.
    looped = replace_line(solution, "dC =", "dC = torch.zeros_like(C)\nfor k in range(n):\n"
                          "    for j in range(block_size):\n        dC[Xb[k, j]] += demb[k, j] @ W1")
    inner = looped.splitlines().index("        dC[Xb[k, j]] += demb[k, j] @ W1") + 1
    for filename in ("ex1_backprop_all.py", "other_name.py"):
        row = by_name(grade_text(looped, filename=filename))["dC"]
        assert row.status is Status.ERROR and row.line == inner, (filename, row)


def _huge_pages_possible() -> bool:
    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False
    release = tuple(int(p) for p in os.uname().release.split(".")[:2] if p.isdigit())
    return "[madvise]" in mode and release >= (6, 1)  # (MADV_COLLAPSE came with 6.1)


@pytest.mark.skipif(not _huge_pages_possible(), reason="huge pages are not given on request here")
def test_a_batch_worker_moves_its_memory_into_huge_pages():
    """A batch forks a student process per submission from a worker holding torch; its memory in
    2 MB pages makes each fork and exit copy and tear down far fewer page-table entries."""
    probe = ("import torch\nfrom grader.sandbox import use_huge_pages\n"
             "def huge():\n"
             "    return sum(int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHuge'))\n"
             "before = huge()\nuse_huge_pages()\nprint(before, huge() > 50 * 1024)\n")
    assert python_prints(probe) == "0 True"
