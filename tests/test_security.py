"""The attack suite: what a hostile submission tries, and what must still be true afterwards.

Two kinds of attack. Those against the guard (`grader.policy`) are written as a student would
write them. Those against the layers under it (the clean student process, the one reader of
the pipe, process limits, users per student process, the sandbox) run with the `escaped`
fixture: the student's code gets `os`, `signal`, `ctypes`, `gc` and `sys`, as if it had got past
the guard, and the layers under it must hold on their own. Every test checks that the cheated
gradients do not pass and, where a class is graded, that honest students keep full marks and
the gradebook is written. The last part attacks what a batch reads and writes: names,
archives, links, oversized and unparsable files, and being interrupted.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import grader.batch as batch
import grader.classbook as classbook
from grader.batch import MAX_SUBMISSION_BYTES, run_batch
from grader.outputs import load_results, safe_cell, write_atomically
from grader.compare import Status
from grader.exercises import EX1, EX2, EX3, EX4
from grader.network import reference
from grader.sandbox import STUDENT_UIDS, bwrap_path
from grader.wire import Malformed, Reader, check_frame

from conftest import SOLUTION, by_name, grade_text, replace_line

HAVE_BWRAP = bwrap_path() is not None
ROOT = os.getuid() == 0
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap is not installed")


def failing(result) -> list[str]:
    return [r.name for r in result.results if not r.status.passed]


def grade_class(folder: Path, out: Path, **options) -> dict:
    options = {"log": lambda _text: None, "progress_stream": io.StringIO(), "jobs": 1, "sandbox": "none", **options}
    return run_batch(submissions=folder, out=out, **options)


def error_of(out: Path, student: str) -> str | None:
    return json.loads((out / "feedback" / f"{student}.json").read_text())[0]["error"]


def student(folder: Path, name: str, source: str, filename: str = "ex1_backprop_all.py") -> Path:
    (folder / name).mkdir(parents=True, exist_ok=True)
    path = folder / name / filename
    path.write_text(source)
    return path


def with_line(line: str) -> str:
    """The solution with `line` run just before `dh` is answered."""
    return replace_line(SOLUTION, "dh =", f"{line}\ndh = dlogits @ W2.T")


def gradebook(out: Path) -> dict[str, dict]:
    with open(out / "gradebook.csv", newline="") as handle:
        return {row["student"]: row for row in csv.DictReader(handle)}


def feedback(out: Path, student: str) -> list[dict]:
    return json.loads((out / "feedback" / f"{student}.json").read_text())


def checksum(name: str) -> float:
    return float(reference().gradients[name].double().sum())


# --- the guard: reading the answers, autograd, internals ---


FRAME_WALK = """
try:
    raise ValueError
except ValueError as e:
    frame = e.__traceback__.tb_frame.f_back
dlogprobs = frame.f_locals['gradients']['dlogprobs']
"""


@pytest.mark.parametrize("cheat", [
    FRAME_WALK,
    "e = ValueError()\ndlogprobs = getattr(e, '__trace' + 'back__')",
    "dlogprobs = [x for x in ().__class__.__base__.__subclasses__()][0]",
    "from grader.network import reference\ndlogprobs = reference().gradients['logprobs']",
    "import grader.network as net\ndlogprobs = net.reference().gradients['logprobs']",
    "dlogprobs = getattr(__builtins__, '__imp' + 'ort__')('grader').network",
    "import importlib\ndlogprobs = importlib.import_module('grader.network').reference().gradients['logprobs']",
    "dlogprobs = globals()['logprobs']",
    "dlogprobs = open('/etc/passwd').read()",
    "dlogprobs = eval('logprobs' + '.grad')",
])
def test_the_answers_are_out_of_reach(cheat):
    result = grade_text(replace_line(SOLUTION, "dlogprobs =", cheat))
    assert by_name(result)["dlogprobs"].status is Status.FAIL
    assert by_name(result)["dlogprobs"].policy is not None
    assert failing(result) == ["dlogprobs"]  # the honest lines around it still pass


AUTOGRAD_CHEATS = [
    "dh = (getattr(torch, 'enable_' + 'grad')(), h)[1]",
    "t = h.clone()\ngetattr(t, 'requires_' + 'grad_')()\ndh = t",
    "dh = getattr(loss, 'back' + 'ward')()",
    "dh = getattr(getattr(torch, 'fu' + 'nc'), 'gr' + 'ad')",
    "dh = getattr(h, 'gr' + 'ad')",
    "dh = torch.autograd.grad(loss, h)[0]",
    "dh = h.register_hook",
    "dh = getattr(torch, 'o' + 'ps').aten.tanh_backward(dhpreact, h)",
    "dh = torch.ops.aten.mm(dlogits, W2.t())",
    "dh = torch.batch_norm_backward_elemt",
    "dh = getattr(torch, '_' + 'C')",
    "dh = torch.compile(lambda: dlogits @ W2.T)()",
    "dh = getattr(torch, 'load')('x.pt')",
]


@pytest.mark.parametrize("cheat", AUTOGRAD_CHEATS)
def test_autograd_in_every_form_is_refused_at_run_time(cheat):
    result = grade_text(replace_line(SOLUTION, "dh =", cheat))
    dh = by_name(result)["dh"]
    assert dh.status is Status.FAIL and dh.policy in ("autograd", "internals"), dh
    assert "is not allowed" in dh.hint
    assert failing(result) == ["dh"]


def test_setting_requires_grad_on_a_forward_tensor_fails_nothing_else():
    result = grade_text(replace_line(SOLUTION, "dh =", "h.requires_grad = True\ndh = dlogits @ W2.T"))
    assert failing(result) == [] and any("`requires_grad` is not allowed here" in n for n in result.notes)


@pytest.mark.parametrize("cheat", [
    "class Sneaky(torch.Tensor):\n    pass\ndh = Sneaky(dlogits @ W2.T)",
    "Sneaky = type('Sneaky', (torch.Tensor,), {})\ndh = (dlogits @ W2.T).as_subclass(Sneaky)",
    "dh = torch.Tensor._make_subclass(torch.Tensor, dlogits @ W2.T)",
    "dh = torch.Tensor.__torch_function__",
])
def test_a_tensor_subclass_cannot_be_made(cheat):
    result = grade_text(replace_line(SOLUTION, "dh =", cheat))
    assert by_name(result)["dh"].status in (Status.FAIL, Status.ERROR)
    assert failing(result) == ["dh"]


def test_autograd_through_built_strings_fails_every_exercise():
    cheats = {
        EX2: "logits.requires_grad_\ndlogits = getattr(logits, 'gr' + 'ad')",
        EX3: "dhprebn = getattr(getattr(torch, 'auto' + 'grad'), 'grad')(hpreact, hprebn, dhpreact)[0]",
    }
    for exercise, cheat in cheats.items():
        source = exercise.solution_path.read_text() + cheat + "\n"  # the last assignment is the answer
        result = grade_text(source, exercise=exercise, filename=f"{exercise.slug}.py")
        assert result.score == 0 and all(r.policy for r in result.results), result


@pytest.mark.slow
def test_exercise_4_cannot_train_on_autograd():
    cheat = ("getattr(torch, 'set_grad' + '_enabled')(True)\n"
             "for p in [C, W1, b1, W2, b2, bngain, bnbias]: getattr(p, 'requires_grad_')()\n"
             "getattr(loss, 'back' + 'ward')()\n"
             "dC, dW1, db1, dW2, db2, dbngain, dbnbias = [getattr(p, 'gr' + 'ad') for p in [C, W1, b1, W2, b2, bngain, bnbias]]")
    result = grade_text(cheat + "\n", exercise=EX4, filename="ex4_training.py")
    assert result.score == 0
    assert all(r.policy == "autograd" for r in result.results)
    assert result.training is not None and not result.training.passed


def test_an_honest_student_who_tries_autograd_once_keeps_the_rest():
    source = replace_line(SOLUTION, "dh =", "try:\n    loss.backward()\nexcept BaseException:\n    pass\ndh = dlogits @ W2.T")
    result = grade_text(source)
    assert failing(result) == []  # the refused line assigns nothing; every gradient is honest
    assert any("`backward` is not allowed here" in note for note in result.notes)


def test_type_gives_no_way_to_make_a_class():
    cheat = ("T = type(type(1))\n"
             "NG = T('NG', (type(torch.no_grad()),), {'prev': True})\n"
             "dh = dlogits @ W2.T")
    result = grade_text(replace_line(SOLUTION, "dh =", cheat))
    assert failing(result) == [] and any("`type of a class` is not allowed here" in n for n in result.notes)
    honest = replace_line(SOLUTION, "dh =", "print(type(dlogits))\ndh = dlogits @ W2.T")
    assert "Tensor" in grade_text(honest).output


def test_what_students_really_write_still_runs():
    source = SOLUTION.replace(
        "dC = torch.zeros_like(C).index_add_(0, Xb.view(-1), demb.view(-1, n_embd))  # the lecture loops over Xb",
        "dC = torch.zeros_like(C)\n"
        "for k in range(Xb.shape[0]):\n"
        "    for j in range(Xb.shape[1]):\n"
        "        ix = Xb[k, j]\n"
        "        dC[ix] += demb[k, j]\n"
        "print(f'dC {tuple(dC.shape)} {dC.abs().max().item():.3f}', math.pi > 3)",
    ).replace("dh = dlogits @ W2.T", "def matmul_back(d, w):\n    return d @ w.T\ndh = matmul_back(dlogits, W2)\n"
              "print(dh[0, :3], f'{dh.sum():.3f}', repr(torch.tensor(1.5)))")
    source = replace_line(source, "db2 =", "db2: torch.Tensor = torch.from_numpy(dlogits.numpy().sum(0))")
    source = replace_line(source, "demb =", "demb = dembcat.unflatten(1, (block_size, n_embd))")
    source = "import math\nimport torch.nn.functional as F\nfrom torch.nn import functional\n" + source
    result = grade_text(source)
    assert failing(result) == [] and result.notes == () and "dC (27, 10)" in result.output
    assert "tensor([" in result.output  # printing a tensor works in the student process


# --- the clean process: nothing in memory that a student is not entitled to ---


def test_an_escaped_student_finds_no_reference_gradient_in_memory(escaped):
    # Scan every object the process holds for the reference gradient of `dh` (by its sum), before
    # answering it; and, as a control, for `dlogits`, which the student has answered already.
    scan = ("[o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.shape == {shape} "
            "and abs(float(o.double().sum()) - {sum!r}) < 1e-6]")
    dh_scan = scan.format(shape="h.shape", sum=checksum("h"))
    control = scan.format(shape="logits.shape", sum=checksum("logits"))
    cheat = (f"found = {dh_scan}\nprint('control', len({control}) > 0)\n"
             "dh = found[0] if found else torch.zeros_like(h)")
    result = grade_text(replace_line(SOLUTION, "dh =", cheat))
    assert "control True" in result.output  # the scan finds a gradient that is in memory
    assert by_name(result)["dh"].status is Status.FAIL  # and the one not yet answered is not there


# --- the wire: nothing a student process sends can crash the grader ---


def frame(header: dict | str, payload: bytes = b"") -> str:
    """Source that writes one raw frame to the student process's answer pipe (descriptor 4)."""
    body = (header if isinstance(header, str) else json.dumps(header)).encode()
    return f"os.write(4, {len(body).to_bytes(4, 'big') + body + payload!r})"


FORGERIES = {
    "a list for a name": frame({"t": "answer", "name": ["x"], "line": 1, "kind": "tensor"}),
    "deep JSON": frame('{"t": "note", "line": 1, "message": ' + "[" * 20000 + "]" * 20000 + "}"),
    "a huge shape": frame({"t": "answer", "name": "dh", "line": 1, "kind": "tensor", "dtype": "float32",
                           "shape": [2**80, 0]}),
    "a 256 MB payload": frame({"t": "answer", "name": "dh", "line": 1, "kind": "tensor", "dtype": "float32",
                               "shape": [1 << 26], "nbytes": 1 << 28}),
    "an unknown name": frame({"t": "answer", "name": "dsecret", "line": 1, "kind": "other", "description": "x"}),
    "a bool for a line": frame({"t": "line", "line": True}),
    "not JSON": frame("{not json"),
    "a header too long": f"os.write(4, {(1 << 31).to_bytes(4, 'big')!r})",
    "a flood of notes": "for i in range(200000): os.write(4, b'\\x00\\x00\\x00\\x25{\"t\":\"note\",\"line\":1,\"message\":\"x\"}')",
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_frame_is_that_submissions_error(escaped, forgery):
    result = grade_text(replace_line(SOLUTION, "dh =", FORGERIES[forgery]))
    assert result.error and ("malformed data" in result.error or "ended abruptly" in result.error), result.error
    assert by_name(result)["dlogits"].status is Status.EXACT  # what was answered before it is kept
    assert by_name(result)["dh"].status is not Status.EXACT


def test_a_forged_next_gets_no_reference_early(escaped):
    # Say "statement 10**6 is done" before answering anything: every reference would be due.
    forged = frame({"t": "next", "index": 10**6})
    source = SOLUTION.replace("dlogprobs = -1.0/n", forged + "\ndlogprobs = -1.0/n", 1)
    result = grade_text(source)
    assert result.error and "malformed data" in result.error
    assert result.passing == 0


def test_a_statement_said_done_out_of_order_is_malformed(escaped):
    forged = frame({"t": "next", "index": -1})  # statement -1 again, in the middle of the file
    result = grade_text(replace_line(SOLUTION, "dprobs =", forged + "\ndprobs = (1.0 / probs) * dlogprobs"))
    assert result.error and "malformed data" in result.error


def test_a_second_answer_for_a_gradient_is_malformed(escaped):
    forged = frame({"t": "answer", "name": "dlogprobs", "line": 1, "kind": "other", "description": "x", "run": 0})
    result = grade_text(replace_line(SOLUTION, "dprobs =", forged + "\ndprobs = (1.0 / probs) * dlogprobs"))
    assert result.error and "malformed data" in result.error


EXPECTED = {"dh": 32 * 64, "dlogits": 32 * 27}


def valid_frames():
    tensor = st.fixed_dictionaries({
        "t": st.just("answer"), "name": st.sampled_from(sorted(EXPECTED)), "line": st.integers(1, 99),
        "kind": st.just("tensor"), "dtype": st.sampled_from(["float32", "float64", "int64", "bogus"]),
        "shape": st.lists(st.integers(-2, 2**70), max_size=4)})
    simple = st.fixed_dictionaries({"t": st.sampled_from(["line", "note", "stop", "done", "error", "next"]),
                                    "line": st.one_of(st.integers(), st.none(), st.booleans(), st.text()),
                                    "message": st.text(max_size=20), "names": st.lists(st.text(max_size=8))})
    return st.one_of(tensor, simple)


def _read_all(data: bytes) -> list:
    read, write = os.pipe()
    try:
        os.write(write, data)
        os.close(write)
        return list(Reader(read, time.monotonic() + 5).messages(lambda h: check_frame(h, EXPECTED)))
    finally:
        os.close(read)


@settings(max_examples=300, deadline=None)
@given(header=valid_frames(), mutation=st.binary(max_size=8), cut=st.integers(0, 200), payload=st.binary(max_size=64))
def test_the_reader_never_raises_but_malformed(header, mutation, cut, payload):
    body = json.dumps(header).encode()
    body = body[:cut] + mutation + body[cut:] if mutation else body
    data = len(body).to_bytes(4, "big") + body + payload
    try:
        for parsed, raw in _read_all(data[:60000]):  # a pipe's worth
            assert isinstance(parsed, dict) and isinstance(raw, bytes)
    except Malformed:
        pass


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_are_malformed_or_nothing(data):
    try:
        _read_all(data)
    except Malformed:
        pass


# --- the command line: a parse bomb is one sentence, not a traceback ---


def test_a_parse_bomb_is_a_syntax_error_not_a_crash(tmp_path):
    bomb = tmp_path / "ex1_backprop_all.py"
    bomb.write_text("dlogprobs = " + "1+" * 100_000 + "1\n")
    done = subprocess.run([shutil.which("grade"), str(bomb), "--json"], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr and done.returncode == 2
    assert "too deeply nested" in json.loads(done.stdout)["error"]


# --- a class no submission can sink: neighbours, sources, the sandbox's disk ---


def honest_class(folder: Path, count: int = 3) -> None:
    for i in range(count):
        (folder / f"honest{i}").mkdir(parents=True)
        (folder / f"honest{i}" / "ex1_backprop_all.py").write_text(f"# MARKER-honest{i}-secret\n" + SOLUTION)


def attacker(folder: Path, student: str, line: str) -> None:
    (folder / student).mkdir(parents=True)
    (folder / student / "ex1_backprop_all.py").write_text(replace_line(SOLUTION, "dh =", line))


def assert_class_unharmed(out: Path, count: int = 3) -> None:
    book = gradebook(out)
    for i in range(count):
        assert book[f"honest{i}"]["ex1"] == "26", book[f"honest{i}"]


SIBLING_ATTACK = ("deadline = time.monotonic() + 2.5\nwhile time.monotonic() < deadline:\n"
                  "    for pid in range(1, 400):\n        if pid != os.getpid():\n            try:\n"
                  "                os.kill(pid, signal.{})\n            except OSError:\n                pass\n"
                  "dh = dlogits @ W2.T")
SIBLING_ATTACKS = {"killer": SIBLING_ATTACK.format("SIGKILL"), "stopper": SIBLING_ATTACK.format("SIGSTOP")}


@pytest.mark.slow
@needs_bwrap
@pytest.mark.skipif(not ROOT, reason="a user per student process needs root")
@pytest.mark.parametrize("attack", SIBLING_ATTACKS)
def test_a_student_cannot_kill_or_stop_a_neighbour(tmp_path, escaped, monkeypatch, attack):
    from grader import policy

    monkeypatch.setattr(policy, "ESCAPED", (*policy.ESCAPED, "time"))
    folder = tmp_path / "class"
    honest_class(folder, 4)
    attacker(folder, "attacker", SIBLING_ATTACKS[attack])
    out = tmp_path / "out"
    grade_class(folder, out, jobs=2, timeout=4.0, sandbox="bwrap")
    assert_class_unharmed(out, 4)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert not any(r.get("retried") for r in records if r["student"].startswith("honest"))  # no rescue was needed


@pytest.mark.slow
@needs_bwrap
def test_a_student_cannot_read_another_students_source(tmp_path, escaped):
    thief = ("found = set()\n"
             "for o in gc.get_objects():\n"
             "    for s in (o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else [o]):\n"
             "        if isinstance(s, str) and 'MARKER-' in s:\n"
             "            found.add(s[s.index('MARKER-'):][:40])\n"
             "for pid in os.listdir('/proc'):\n"
             "    for part in ('cmdline', 'environ'):\n"
             "        try:\n"
             "            data = open('/proc/' + pid + '/' + part, 'rb').read()\n"
             "        except OSError:\n"
             "            continue\n"
             "        if b'MARKER-' in data:\n"
             "            found.add(data[data.index(b'MARKER-'):][:40].decode('latin-1'))\n"
             "print('stolen:', sorted(found))\n"
             "dh = dlogits @ W2.T")
    folder = tmp_path / "class"
    honest_class(folder, 3)
    attacker(folder, "zthief", f"# MARKER-zthief-own\n{thief}")
    out = tmp_path / "out"
    grade_class(folder, out, jobs=1, sandbox="bwrap")
    assert_class_unharmed(out)
    report = feedback(out, "zthief")[0]
    assert "stolen:" in report["output"]
    assert "MARKER-zthief-own" in report["output"]  # the scan works: it finds the thief's own file
    assert "honest" not in report["output"]


@pytest.mark.slow
@needs_bwrap
def test_a_student_cannot_fill_the_machines_memory_through_the_sandboxs_disk(tmp_path, escaped):
    filler = ("written = 0\n"
              "for folder in ('.', '/tmp'):\n"
              "    for i in range(40):\n"
              "        try:\n"
              "            fd = os.open(folder + '/fill' + str(i), os.O_WRONLY | os.O_CREAT)\n"
              "            written += os.write(fd, b'x' * (15 << 20)) >> 20\n"
              "        except OSError as e:\n"
              "            print(folder, 'stopped:', e.strerror)\n"
              "            break\n"
              "print('written MB', written, os.getcwd())\n"
              "dh = dlogits @ W2.T")
    folder = tmp_path / "class"
    honest_class(folder, 2)
    attacker(folder, "filler", filler)
    out = tmp_path / "out"
    grade_class(folder, out, jobs=1, sandbox="bwrap")
    assert_class_unharmed(out, 2)
    output = feedback(out, "filler")[0]["output"]
    written = int(output.split("written MB")[1].split()[0])
    assert 0 < written <= 64  # one tmpfs of 64 MB (its working folder is under /tmp), not half the memory


@pytest.mark.skipif(not ROOT, reason="a user per student process needs root")
def test_gradescope_results_outlive_every_student_process(tmp_path, escaped, monkeypatch):
    from grader import policy
    from grader.gradescope import gradescope_results, write_results

    monkeypatch.setattr(policy, "ESCAPED", (*policy.ESCAPED, "time"))
    submission = tmp_path / "submission"
    submission.mkdir()
    results = tmp_path / "results" / "results.json"
    late = (f"try:\n    pid = os.fork()\nexcept OSError as e:\n    print('fork:', e.strerror)\n    pid = 1\n"
            f"if pid == 0:\n    os.setsid()\n    time.sleep(3)\n"
            f"    os.write(os.open({str(results)!r}, os.O_WRONLY | os.O_TRUNC), b'forged')\n"
            f"dh = dlogits @ W2.T")
    (submission / "ex1_backprop_all.py").write_text(replace_line(SOLUTION, "dh =", late))
    data = gradescope_results(submission=submission, timeout=5.0, sandbox="none")
    write_results(data, results)
    assert data["score"] == 26
    time.sleep(3.5)
    assert json.loads(results.read_text())["score"] == 26
    left = [p for p in os.listdir("/proc") if p.isdigit() and _owner(p) in STUDENT_UIDS]
    assert left == []


def _owner(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


@pytest.mark.slow
@pytest.mark.skipif(not ROOT, reason="student processes are told apart by their users, which needs root")
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGSTOP"])
def test_a_student_process_hurt_from_outside_is_graded_again_alone(tmp_path, signal_name):
    import signal
    import threading

    folder = tmp_path / "class"
    honest_class(folder, 2)
    hit: list[int] = []

    def strike():  # what a neighbour that got past every layer would do: hit the first student process
        deadline = time.monotonic() + 60
        while not hit and time.monotonic() < deadline:
            for pid in os.listdir("/proc"):
                if pid.isdigit() and _owner(pid) in STUDENT_UIDS:
                    os.kill(int(pid), getattr(signal, signal_name))
                    hit.append(int(pid))
                    break

    striker = threading.Thread(target=strike)
    striker.start()
    out = tmp_path / "out"
    grade_class(folder, out, jobs=1, timeout=2.0, sandbox="none")
    striker.join()
    assert hit
    assert_class_unharmed(out, 2)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sum(r["retried"] for r in records) == 1


# --- a batch's inputs and outputs: names, archives, links, files, interruptions ---


def test_zip_members_that_escape_their_folder_or_are_links_are_skipped_and_listed(tmp_path):
    archive = tmp_path / "class.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("bob/ex1_backprop_all.py", SOLUTION)
        zf.writestr("mallory/ex2_cross_entropy.py", EX2.solution_path.read_text())
        zf.writestr("mallory/../bob/ex1_backprop_all.py", EX1.stub_path.read_text())  # would replace bob's file
        zf.writestr("/abs/ex1_backprop_all.py", EX1.stub_path.read_text())
        zf.writestr("C:/drive/ex1_backprop_all.py", EX1.stub_path.read_text())
        link = zipfile.ZipInfo("mallory/ex1_backprop_all.py")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../bob/ex1_backprop_all.py")
    printed = []
    summary = grade_class(archive, tmp_path / "out", log=printed.append)
    book = gradebook(tmp_path / "out")
    assert set(book) == {"bob", "mallory"}
    assert book["bob"]["ex1"] == "26" and book["mallory"]["ex2"] == "1"
    assert sorted(summary["skipped"]) == [
        "/abs/ex1_backprop_all.py (an absolute path)",
        "C:/drive/ex1_backprop_all.py (an absolute path)",
        "mallory/../bob/ex1_backprop_all.py (a path through ..)",
        "mallory/ex1_backprop_all.py (a symbolic link)",
    ]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["skipped"] == summary["skipped"]
    assert "not read (4): " in printed[-1]


def test_symbolic_links_in_a_class_folder_are_never_followed(tmp_path):
    secret = "the-exam-answers-7f3a"
    private = tmp_path / "instructor"
    private.mkdir()
    answers = private / "ex1_backprop_all.py"
    answers.write_text(with_line(f"print({secret!r})"))
    folder = tmp_path / "class"
    student(folder, "bob", SOLUTION)
    (folder / "alice").mkdir()
    (folder / "alice" / "ex1_backprop_all.py").symlink_to(answers)
    (folder / "bob" / "more").symlink_to(private, target_is_directory=True)
    (folder / "carol").symlink_to(private, target_is_directory=True)
    (folder / "dave_ex1_backprop_all.py").symlink_to(answers)
    out = tmp_path / "out"
    summary = grade_class(folder, out)
    assert set(gradebook(out)) == {"bob"}
    assert sorted(summary["skipped"]) == [
        "alice/ex1_backprop_all.py (a symbolic link)", "bob/more (a symbolic link)",
        "carol (a symbolic link)", "dave_ex1_backprop_all.py (a symbolic link)"]
    for path in out.rglob("*"):
        assert path.is_dir() or secret not in path.read_text(errors="replace"), path


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "zip"])
def test_a_file_over_the_size_cap_is_an_error_row_or_skipped(tmp_path, packed):
    folder = tmp_path / "class"
    padding = "#" * MAX_SUBMISSION_BYTES + "\n"
    student(folder, "alice", SOLUTION)
    student(folder, "bob", SOLUTION + padding)
    student(folder, "bob", "x = 1\n" + padding, filename="notes.py")
    if packed:
        with zipfile.ZipFile(tmp_path / "class.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*.py")):
                zf.write(path, path.relative_to(folder))
    out = tmp_path / "out"
    summary = grade_class(tmp_path / "class.zip" if packed else folder, out)
    book = gradebook(out)
    assert book["alice"]["ex1"] == "26" and book["bob"]["ex1"] == "0"
    assert error_of(out, "bob") == "bob/ex1_backprop_all.py is larger than 1 MB"
    assert summary["skipped"] == ["bob/notes.py (larger than 1 MB)"]


def test_a_parse_bomb_is_an_error_row_and_the_class_is_still_graded(tmp_path):
    folder = tmp_path / "class"
    student(folder, "honest", SOLUTION)
    student(folder, "adder", "dlogprobs = " + "+".join(["1"] * 100_000) + "\n")  # RecursionError in ast.parse
    student(folder, "negator", "dlogprobs = " + "-" * 200_000 + "1\n")  # MemoryError in ast.parse
    student(folder, "nester", "dlogprobs = " + "(" * 100_000 + ")" * 100_000 + "\n")  # a SyntaxError
    out = tmp_path / "out"
    grade_class(folder, out)
    book = gradebook(out)
    assert book["honest"]["ex1"] == "26"
    assert book["adder"]["ex1"] == book["negator"]["ex1"] == book["nester"]["ex1"] == "0"
    assert "too deeply nested to parse" in error_of(out, "adder")
    assert "too deeply nested to parse" in error_of(out, "negator")
    assert error_of(out, "nester")


def test_a_folder_name_that_is_not_utf8_is_shown_escaped_and_graded(tmp_path):
    folder = tmp_path / "class"
    student(folder, "alice", SOLUTION)
    student(folder, os.fsdecode(b"b\xffd"), SOLUTION)  # a name Python can only hold as a lone surrogate
    out = tmp_path / "out"
    grade_class(folder, out)
    assert gradebook(out) == {
        "alice": {"student": "alice", "total": "26", "max_total": "26", "status": "ok", "late": "", "ex1": "26"},
        "b\\xffd": {"student": "b\\xffd", "total": "26", "max_total": "26", "status": "ok", "late": "", "ex1": "26"},
    }


# --- what is written ---


def test_a_grader_failure_on_one_submission_is_that_submissions_error_row(tmp_path, monkeypatch):
    folder = tmp_path / "class"
    student(folder, "lucky", SOLUTION)
    student(folder, "unlucky", SOLUTION)
    real = batch.grade_submission

    def flaky(submission, **options):
        if submission.student == "unlucky":
            raise RuntimeError("a bug in the grader")
        return real(submission, **options)

    monkeypatch.setattr(batch, "grade_submission", flaky)
    out = tmp_path / "out"
    grade_class(folder, out)
    book = gradebook(out)
    assert book["lucky"]["ex1"] == "26" and book["unlucky"]["ex1"] == "0"
    assert error_of(out, "unlucky") == "the grader failed on this submission: RuntimeError"
    assert len(load_results(out / "results.jsonl")) == 2


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = tmp_path / "gradebook.csv"
    path.write_text("student,total\nalice,26\n")
    with pytest.raises(UnicodeEncodeError):
        write_atomically(path, "student,total\nb\udcffd,0\n")  # fails half-way, as a full disk would
    assert path.read_text() == "student,total\nalice,26\n"
    assert os.listdir(tmp_path) == ["gradebook.csv"]


def test_feedback_is_swapped_in_whole_or_not_at_all(tmp_path, monkeypatch):
    folder = tmp_path / "class"
    for name in ("alice", "bob"):
        student(folder, name, SOLUTION)
    out = tmp_path / "out"
    grade_class(folder, out)
    before = {path.name: path.read_text() for path in (out / "feedback").iterdir()}
    listing = sorted(os.listdir(out))
    real, calls = classbook.write_plainly, []

    def full_disk(path, text):
        calls.append(path)
        if len(calls) == 2:  # the second feedback file of the class
            raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(classbook, "write_plainly", full_disk)
    with pytest.raises(OSError):
        grade_class(folder, out)
    assert {path.name: path.read_text() for path in (out / "feedback").iterdir()} == before
    assert sorted(os.listdir(out)) == listing  # no half-built folder or temporary file left behind


class ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_progress_pipe_stops_the_run_without_a_gradebook(tmp_path):
    folder = tmp_path / "class"
    for name in ("alice", "bob", "carol", "dave"):
        student(folder, name, SOLUTION)
    out = tmp_path / "out"
    with pytest.raises(BrokenPipeError):
        grade_class(folder, out, progress_stream=ClosedPipe())
    graded = len(load_results(out / "results.jsonl"))
    assert 1 <= graded < 4 and not (out / "gradebook.csv").exists() and not (out / "feedback").exists()


@pytest.mark.slow
def test_sigterm_stops_the_batch_without_a_gradebook_and_the_next_run_finishes_it(tmp_path):
    folder = tmp_path / "class"
    student(folder, "a_quick", SOLUTION)
    student(folder, "b_looper", with_line("while True: pass"))
    student(folder, "c_quick", SOLUTION)
    out = tmp_path / "out"
    command = [sys.executable, "-c", "from grader.cli import main; main()", "batch", str(folder), "--out", str(out),
               "--jobs", "1", "--timeout", "5", "--sandbox", "none"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not load_results(out / "results.jsonl") and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: run the same command again to resume" in stderr
    assert not (out / "gradebook.csv").exists() and not (out / "feedback").exists()
    assert len(load_results(out / "results.jsonl")) < 3

    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    book = gradebook(out)
    assert set(book) == {"a_quick", "b_looper", "c_quick"}
    assert book["a_quick"]["ex1"] == book["c_quick"]["ex1"] == "26"


# --- what is shown ---


def test_escape_sequences_from_names_and_output_never_reach_the_terminal_or_feedback(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    (folder / "\x1b[31mevil\x9b2J_ex1_backprop_all.py").write_text(
        with_line(r'print("\x1b[2J\x1b[Hall 26/26 passing\x9b31m")'))
    (folder / "\x1b]0;pwned\x07notes.txt").write_text("not a submission")
    printed, progress = [], io.StringIO()
    grade_class(folder, tmp_path / "out", log=printed.append, progress_stream=progress)
    (report,) = (tmp_path / "out" / "feedback").glob("*.txt")
    feedback = report.read_text()
    assert "all 26/26 passing" in feedback and "evil_ex1_backprop_all.py" in feedback
    for shown in ("\n".join(printed), progress.getvalue(), feedback):
        assert "\x1b" not in shown and "\x9b" not in shown and "\x07" not in shown


@pytest.mark.parametrize("cell", [
    " =1+1", "\t=cmd|' /C calc'!A0", "\n=1", "\r\n@SUM(A1)", "\u3000=1", "\u00a0+1", "\u2003-1",
    "＝1+1", "＋1", "－1", "＠SUM(A1)", " ＝1",
])
def test_csv_cells_that_a_spreadsheet_would_read_as_a_formula_are_quoted(cell):
    assert safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["alice", "O'Brien", " bob", "ana-maria", "26"])
def test_csv_cells_that_are_plain_text_are_unchanged(cell):
    assert safe_cell(cell) == cell


# --- teacher forcing: a reference gradient is never in scope before its answer ---


def test_a_blank_moved_above_cannot_feed_the_line_it_depends_on():
    # `dhpreact` left blank, moved above `dh`: were its reference injected at the blank, `dh` could be
    # worked back from it. It is released only after `dh` (earlier in backward order) is answered.
    cheat = replace_line(SOLUTION, "dhpreact =", "").replace(
        "dh = dlogits @ W2.T", "dhpreact = ...\ndh = dhpreact / (1.0 - h**2)")
    result = grade_text(cheat)
    assert by_name(result)["dh"].status not in (Status.EXACT, Status.APPROX)
    assert "still blank" in (by_name(result)["dh"].hint or "")
    assert by_name(result)["dbngain"].status is Status.EXACT  # later lines still get dhpreact's reference


def test_a_gradient_never_assigned_is_not_handed_to_the_lines_before_it():
    cheat = replace_line(SOLUTION, "dhpreact =", "").replace("dh = dlogits @ W2.T", "dh = dhpreact / (1.0 - h**2)")
    result = grade_text(cheat)
    assert by_name(result)["dh"].status is Status.ERROR and by_name(result)["dhpreact"].status is Status.MISSING
    assert by_name(result)["dbngain"].status is Status.EXACT


def test_a_refused_construct_is_named_in_words_and_a_loop_temporary_is_not_tainted():
    source = replace_line(SOLUTION, "dh =", "h.data += 1\nix = getattr(Xb, 'gr' + 'ad')\ndh = dlogits @ W2.T")
    source = source.replace(
        "dC = torch.zeros_like(C).index_add_(0, Xb.view(-1), demb.view(-1, n_embd))  # the lecture loops over Xb",
        "dC = torch.zeros_like(C)\nfor k in range(Xb.shape[0]):\n    for j in range(Xb.shape[1]):\n"
        "        ix = Xb[k, j]\n        dC[ix] += demb[k, j]")
    result = grade_text(source)
    assert failing(result) == []  # neither refused line assigns a gradient; the loop's ix is its own
    assert any("augmented assignment of attributes is not allowed here" in n for n in result.notes), result.notes


def test_code_that_switches_autograd_back_on_fails_that_line(escaped):
    # Past the guard, `torch.set_grad_enabled` is reachable: the line that calls it still fails.
    cheat = "dh = (torch.set_grad_enabled(True), dlogits @ W2.T)[1]"
    result = grade_text(replace_line(SOLUTION, "dh =", cheat))
    assert failing(result) == ["dh"] and by_name(result)["dh"].policy == "autograd"
    assert "`enable_grad` is not allowed here" in by_name(result)["dh"].hint
