"""Run a student's file, one top-level statement at a time, in a separate process.

The plan (which statement makes the final assignment to each gradient, which are
still blank) is worked out here, in the grader's process, from the syntax tree.
A student process then executes the statements, each compiled under the guard of
`grader.policy`, with the forward tensors in scope. When a statement has made its
final assignment to `dX`, the process sends its value back; the grader answers
with the reference gradients now due (`release_points`), which replace the
student's values, so that every later line is judged on correct inputs (teacher
forcing). Before every statement the forward tensors and the injected gradients
are restored from fresh copies when the student changed them, so no in-place
change can leak into another line's verdict.

The student process holds nothing it is not entitled to. It is forked from a
clean worker (`grader.sandbox.Worker`: a process that has imported torch and
this runner and computed only what every student may see, the forward passes
and the probes' random values; never a reference gradient, never a submission),
reads its job (the source, which sizes) from a pipe, and receives each reference
gradient only after it has answered for it and for every gradient before it in
backward order; the grader counts the statements and the answers itself. All
runs of a file (the sizes, the lecture's chained run, the float64 run) go through it
together, so one exchange after each statement serves them all (`Session`).
Whatever it sends comes back through the one validating reader of `grader.wire`;
nothing it writes is ever unpickled or executed. It has a wall-clock limit;
whatever it sent before it hung, crashed or exited is kept.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import faulthandler
import gc
import io
import marshal
import math
import os
import re
import resource
import signal
import sys
import threading
import time
import traceback
import types
import weakref
from dataclasses import dataclass, field

import torch

from grader.configs import DEFAULT_TIMEOUT, SubmissionError  # noqa: F401 - part of this module's interface
from grader.network import Config, Public, Reference, public, reference
from grader.policy import Forbidden, Guard, Violation, compile_student
from grader.sandbox import address_space_kb, drop_privileges, libc, limit_resources
from grader.wire import (
    DTYPES, Malformed, Reader, check_frame, decode_tensor, dtype_name, encode_once, encode_value, frame,
    max_elements, pack_tensors, send, send_by, send_bytes, unpack_tensors,
)

MAX_OUTPUT = 4000  # characters of the student's printed output kept
# CPU seconds one statement may use, at all sizes together: a share of the file's --timeout, at least
# STATEMENT_MIN. A right line takes milliseconds (the lecture's Python loop for dC, a few; a
# triple loop for a matrix product, about a second at all sizes), so an endless loop is stopped before
# the file's limit, which stays the limit for the whole file (and for a loop that catches the stop).
STATEMENT_SHARE, STATEMENT_MIN = 0.5, 0.5
MIN_SLICE = 0.01  # what a size still gets of a statement's time when the sizes before it used it all
# Within that limit, a statement runs at the smallest size first, with FIRST_SIZE_CPU; each larger size
# may use GROWTH times what the size before it used (at least FIRST_SIZE_CPU). The slow but right
# triple loop takes about 13 ms at the smallest size, 13 times that at the next and 45 times at the
# lecture's; an endless loop is stopped at the smallest size, after a tenth of a second.
FIRST_SIZE_CPU, GROWTH = 0.1, 50


def statement_cpu(timeout: float) -> float:
    """The CPU seconds one statement may use, for a file's --timeout."""
    return min(timeout, max(STATEMENT_MIN, timeout * STATEMENT_SHARE))


class StatementTimeout(BaseException):
    """Raised in student code that has used up a statement's CPU time (`statement_cpu`)."""


_in_student = False  # in a student process: whether its code is running now (the timer's signal is for it)
_timed_out = False  # whether the timer has fired in the statement running now (caught or not)


def _statement_timer(signum, frame) -> None:
    global _timed_out
    if _in_student:
        _timed_out = True
        raise StatementTimeout


def _untimed_import(*args, **kwargs):
    """`__import__` with the statement's timer paused: a module that torch loads on first use (sympy,
    for `torch.broadcast_shapes`, takes a third of a second) is not the student's loop."""
    if not _in_student:
        return _real_import(*args, **kwargs)
    left = signal.setitimer(STATEMENT_TIMER, 0)
    try:
        return _real_import(*args, **kwargs)
    finally:
        signal.setitimer(STATEMENT_TIMER, *left)


# The statement's timer counts the CPU time its code runs itself (user time), not what the kernel does
# for it: an endless loop is the code's own time, while a right line that fills fresh memory (a 100 MB
# string printed) spends its time in page faults. The file's --timeout and its CPU limit count both.
STATEMENT_TIMER, STATEMENT_SIGNAL = signal.ITIMER_VIRTUAL, signal.SIGVTALRM


def user_time() -> float:
    """This process's CPU time in its own code so far (what the statement's timer counts)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


_real_import = builtins.__import__


@dataclass(frozen=True)
class Facts:
    """What one walk of a statement's tree tells (see `facts`)."""

    assigned: frozenset[str]  # every name it binds or changes in place (`assigned_names`)
    reads: frozenset[str]  # every name it reads
    loop_names: frozenset[str]  # the names its `for` loops and comprehensions bind
    calls: frozenset[str]  # the plain names it calls: `f(...)`
    augmented: frozenset[str]  # the plain names of its `x += ...`


@dataclass
class Statement:
    """One top-level statement of the student's file."""

    index: int
    line: int
    node: ast.stmt | None  # (None in a student process, which is given `names` instead: `Plan.from_wire`)
    assigns: frozenset[str]  # the target names it assigns or changes in place
    blank: bool  # `dX = ...`: the placeholder is still there
    given: Facts | None = field(default=None, repr=False)

    @property
    def names(self) -> Facts:
        """What the statement binds and reads (`facts`)."""
        return self.given if self.given is not None else facts(self.node)


@dataclass(eq=False)  # hashed by identity: plans are cached, and so are facts derived from one
class Plan:
    """The statements of a file and, for each target, the statement that finishes it."""

    statements: list[Statement]
    final: dict[str, int]  # target -> index of its last assigning statement
    missing: list[str]  # targets never assigned

    @property
    def assigned(self) -> set[str]:
        return set(self.final)

    def to_wire(self) -> list:
        """What a student process needs of the plan (`from_wire`), so that it need not parse and walk
        the file again: each statement's place, targets and names."""
        return [[st.index, st.line, sorted(st.assigns), st.blank,
                 *(sorted(names) for names in (st.names.assigned, st.names.reads, st.names.loop_names,
                                               st.names.calls, st.names.augmented))]
                for st in self.statements]

    @staticmethod
    def from_wire(rows: list, targets: tuple[str, ...]) -> "Plan":
        """The plan `to_wire` describes (in a student process: from the grader, which is trusted)."""
        statements, final = [], {}
        for index, line, assigns, blank, *names in rows:
            statements.append(Statement(index, line, None, frozenset(assigns), blank, Facts(*map(frozenset, names))))
            for name in assigns:
                final[name] = index
        return Plan(statements=statements, final=final, missing=[t for t in targets if t not in final])


@dataclass
class Answer:
    """What the student's file produced for one target."""

    name: str
    line: int | None = None
    value: torch.Tensor | None = None
    kind: str = "tensor"  # tensor | other | blank | missing | error
    description: str = ""  # for `other`: what the value is instead of a tensor
    message: str = ""  # for `error`
    policy: str | None = None  # for `error`: the line reached for what an answer may not use


@dataclass
class Run:
    """Everything one execution of a file produced."""

    answers: dict[str, Answer] = field(default_factory=dict)
    error: str | None = None  # a whole-file problem: time limit, exit, crash
    output: str = ""  # what the student's code printed (truncated)
    notes: list[str] = field(default_factory=list)  # errors in lines that assign no target
    plan: Plan | None = None
    probes: dict[str, torch.Tensor] = field(default_factory=dict)  # target -> value on random upstream gradients
    mutated: dict[str, int] = field(default_factory=dict)  # answered target -> line that changed it in place
    cut: str | None = None  # in short, why the rows after `error` were not reached: "time limit at line 31"
    # target -> (line, value) after each statement that assigns it before the one that finishes it
    partials: dict[str, list[tuple[int, torch.Tensor]]] = field(default_factory=dict)


def read_source(path: str, data: bytes | None = None) -> str:
    """The text of a student file (`data`: its bytes, read already), or a `SubmissionError` saying in
    one sentence why not."""
    try:
        if data is None:
            data = open(path, "rb").read()
    except FileNotFoundError:
        raise SubmissionError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise SubmissionError(f"{path} is a directory, not a Python file") from None
    except OSError as exc:
        raise SubmissionError(f"{path} cannot be read: {exc.strerror}") from None
    if b"\0" in data:
        raise SubmissionError(f"{path} is a binary file, not Python source")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"{path} is not UTF-8 text (bad byte at offset {exc.start})") from None


def _base_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Subscript, ast.Attribute, ast.Starred)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


@functools.lru_cache(maxsize=8192)  # by node: asked again and again of the same statements
def facts(node: ast.AST) -> Facts:
    """The names a statement (or any node) binds, reads, loops over and calls, in one walk."""
    names, reads, loops, calls, augmented = set(), set(), set(), set(), set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            if isinstance(child.ctx, ast.Load):
                reads.add(child.id)
            else:
                names.add(child.id)  # Store or Del
        elif isinstance(child, (ast.Subscript, ast.Attribute, ast.Starred)):
            if isinstance(child.ctx, (ast.Store, ast.Del)):
                base = _base_name(child)
                if base:
                    names.add(base)
        elif isinstance(child, ast.Call):
            if isinstance(child.func, ast.Name):
                calls.add(child.func.id)
            elif isinstance(child.func, ast.Attribute):
                method = child.func.attr
                if method.endswith("_") and not method.startswith("__"):  # in-place: x.index_add_(...)
                    base = _base_name(child.func.value)
                    if base:
                        names.add(base)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in child.names)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(child.name)
        elif isinstance(child, ast.AugAssign) and isinstance(child.target, ast.Name):
            augmented.add(child.target.id)
        if isinstance(child, (ast.For, ast.AsyncFor, ast.comprehension)):
            loops.update(n.id for n in ast.walk(child.target) if isinstance(n, ast.Name))
    return Facts(frozenset(names), frozenset(reads), frozenset(loops), frozenset(calls), frozenset(augmented))


def assigned_names(node: ast.AST) -> frozenset[str]:
    """Every name a statement binds or changes in place: `x = `, `x[i] += `, `for x in`,
    `x.add_(...)` and the like, anywhere inside it (loops included)."""
    return facts(node).assigned


def _is_blank(node: ast.stmt) -> bool:
    value = getattr(node, "value", None)
    return isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and (
        isinstance(value, ast.Constant) and value.value is Ellipsis
    )


def parse(source: str, filename: str) -> ast.Module:
    """The syntax tree of a student's file; a file too deeply nested to parse (a 200 kB
    `1+1+...` line) or holding a null byte is a `SyntaxError` like any other. One parse per
    source, whoever asks and under whatever name (never change the tree: it is shared)."""
    try:
        return _parse_once(source)
    except SyntaxError:
        return _parse(source, filename)  # raises, naming the file


@functools.lru_cache(maxsize=16)
def _parse_once(source: str) -> ast.Module:
    return _parse(source, "<submission>")


def _parse(source: str, filename: str) -> ast.Module:
    try:
        return ast.parse(source, filename=filename)
    except (RecursionError, MemoryError):
        raise SyntaxError("too deeply nested to parse", (filename, 1, 0, "")) from None
    except ValueError as exc:
        raise SyntaxError(str(exc), (filename, 1, 0, "")) from None


def statement_binds(node: ast.stmt) -> set[str]:
    """The names a top-level statement binds: a `def` or `class` binds its own name, not what its
    body assigns (a local `dprobs` in a helper function is not the answer)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    return assigned_names(node)


def global_writes(nodes) -> dict[str, set[str]]:
    """For each function defined among `nodes`, the module names it assigns through `global`, itself
    or through the functions of `nodes` it calls."""
    functions = [node for node in nodes if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    writes = {}
    for function in functions:
        declared = {name for inner in ast.walk(function) if isinstance(inner, ast.Global) for name in inner.names}
        writes[function.name] = declared & set().union(set(), *(assigned_names(n) for n in function.body))
    changed = True
    while changed:  # a function that calls one that writes globals writes them too
        changed = False
        for function in functions:
            more = called_writes(function, writes) - writes[function.name]
            if more:
                writes[function.name] |= more
                changed = True
    return writes


def called_writes(node: ast.AST, writes: dict[str, set[str]]) -> set[str]:
    """The module names a statement assigns by calling a function that declares them `global`."""
    return {name for called in facts(node).calls for name in writes.get(called, ())}


@functools.lru_cache(maxsize=64)
def plan(source: str, filename: str, targets: tuple[str, ...]) -> Plan:
    """Parse a file and find, for each target, the statement that finishes it (a call of a function
    that assigns it as a `global` does). Raises `SyntaxError` for a file that is not valid Python."""
    tree = parse(source, filename)
    statements, final = [], {}
    writes = global_writes(tree.body)
    for index, node in enumerate(tree.body):
        assigns = frozenset((statement_binds(node) | called_writes(node, writes)) & set(targets))
        statements.append(
            Statement(index, node.lineno, node, assigns, _is_blank(node))
        )
        for name in assigns:
            final[name] = index
    missing = [t for t in targets if t not in final]
    return Plan(statements=statements, final=final, missing=missing)


class _BoundedText(io.TextIOBase):
    """A stdout that keeps the first characters printed and drops the rest."""

    def __init__(self, limit: int):
        self.parts: list[str] = []
        self.size, self.limit, self.dropped = 0, limit, False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.size < self.limit:
            keep = text[: self.limit - self.size]
            self.parts.append(keep)
            self.size += len(keep)
        if len(text) and self.size >= self.limit:
            self.dropped = True
        return len(text)

    def reset(self) -> None:
        """Start over: each run of a job reports only its own output."""
        self.parts.clear()
        self.size, self.dropped = 0, False

    def getvalue(self) -> str:
        return "".join(self.parts) + ("\n[... output cut ...]" if self.dropped else "")


def _student_error(exc: BaseException, filename: str, fallback_line: int) -> tuple[int, str]:
    """The line in the student's file where an exception arose, and a one-line message."""
    line = fallback_line
    for entry in traceback.extract_tb(exc.__traceback__):
        if entry.filename == filename and entry.lineno:
            line = entry.lineno
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line, message[:300]


def fork_child(body, *, cpu_seconds: float | None = None, workdir: str | None = None,
               uid: int | None = None) -> tuple[int, int, int]:
    """Fork a process that runs `body(read_fd, write_fd, output)` on student code and never returns.

    In the child: its own process group (a timeout kills all it started), no file
    descriptor but its two pipes (the job and reference gradients come in on one, its
    answers go out on the other), `uid` when given (run as root, the worker makes each
    student process that user), resource limits (`sandbox.limit_resources`), printed
    output captured up to a limit (descriptors 1 and 2 go nowhere), no stdin, one thread
    and autograd off. Returns the child's pid, the pipe to read and the pipe to write.
    """
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    size_kb = address_space_kb()
    libc()  # loaded here, once, not in every child
    pid = os.fork()
    if pid:
        os.close(to_child_r)
        os.close(from_child_w)
        return pid, from_child_r, to_child_w
    try:
        os.setsid()
        os.dup2(to_child_r, 3)
        os.dup2(from_child_w, 4)
        os.closerange(5, 1 << 16)  # nothing of the grader's or the worker's (sockets, other students' pipes)
        read_fd, write_fd = 3, 4
        if workdir:
            os.chdir(workdir)
        if uid is not None:
            drop_privileges(uid)
        try:  # PR_SET_PDEATHSIG (after the change of user, which clears it): it dies with the worker
            libc().prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        limit_resources(cpu_seconds, size_kb)
        gc.disable()  # a short life: nothing to collect, and no collection writing to the pages shared with the worker
        faulthandler.disable()  # a crash in student code is reported by the parent, not dumped on its terminal
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        output = _BoundedText(MAX_OUTPUT)
        sys.stdout = sys.stderr = output
        sys.stdin = io.StringIO("")
        torch.set_num_threads(1)
        torch.set_grad_enabled(False)
        signal.signal(STATEMENT_SIGNAL, _statement_timer)
        builtins.__import__ = _untimed_import
    except BaseException as exc:  # noqa: BLE001 - a process that cannot be set up says why, then ends
        try:
            send(4, {"t": "stop", "message": f"the student process could not start: {type(exc).__name__}"})
        finally:
            os._exit(1)
    try:
        body(read_fd, write_fd, output)
    except BaseException as exc:  # noqa: BLE001 - the child must never fall back into the grader
        try:
            send(write_fd, {"t": "stop", "message": f"the grader failed in the student process: {type(exc).__name__}"})
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)


@dataclass
class Options:
    """How to run a file: with the reference injected after each answer (line by line) or not
    (chained, as the lecture runs it), and which lines to re-run on random upstream gradients."""

    inject: bool = True
    probe: bool = False  # send the partial values of split gradients (the lecture's run, which also probes)
    float64: bool = False  # new tensors default to float64, for a float64 reference


# --- the student process ---


def read_job(messages):
    """In a student process: the next job the grader sends, as (args, tensors) where `tensors` maps
    (run, group, name, target) to a tensor; None when the grader has no more. The grader is
    trusted; a job comes whole."""
    args, tensors = None, {}
    for header, payload in messages:
        if header["t"] == "job":
            args = header["args"]
        elif header["t"] == "tensor":
            key = (header["run"], header["group"], header["name"], header.get("target"))
            tensors[key] = decode_tensor(header, payload)
        elif header["t"] == "code":
            tensors["code"] = payload
        elif header["t"] == "end":
            return args, tensors
    return None


class _Channel:
    """The student process's side of the conversation: answers out, reference gradients in.

    What it sends is written when it next waits for the grader (after every statement) or ends,
    so a statement's messages cost one write; none is lost to a later statement that hangs."""

    def __init__(self, write_fd: int, messages):
        self.write_fd, self.messages, self.pending = write_fd, messages, []

    def send(self, header: dict, payload: bytes = b"") -> None:
        self.pending.append(frame(header, payload))

    def flush(self) -> None:
        if self.pending:
            data, self.pending = b"".join(self.pending), []
            send_bytes(self.write_fd, data)

    def next(self, index: int) -> dict[str, torch.Tensor]:
        """Say statement `index` is done; the grader answers with the gradients now due."""
        self.send({"t": "next", "index": index})
        self.flush()
        for header, payload in self.messages:
            return unpack_tensors(header, payload)
        raise EOFError("the grader stopped answering")


@functools.lru_cache(maxsize=4)
def _own_names(the_plan: Plan) -> set[str]:
    """Every name a file's statements assign (its own variables, not the grader's)."""
    return set().union(*(st.names.assigned for st in the_plan.statements))


def _reads_before(found: Facts) -> frozenset[str]:
    """The names a statement reads from before it: those it reads and does not assign itself (a
    loop's `ix = Xb[k, j]` then `dC[ix] += ...` reads its own `ix`), and its `x += ...` targets."""
    return found.reads - (found.assigned - found.augmented)


def _run_student(code, namespace: dict, limit: float) -> None:
    """Run one compiled statement within `limit` seconds of CPU (`STATEMENT_TIMER`, which fires again
    every period should the code catch it; caught or not, the statement has run out of time)."""
    global _in_student, _timed_out
    _in_student, _timed_out = True, False
    signal.setitimer(STATEMENT_TIMER, limit, limit)
    try:
        exec(code, namespace)
    finally:
        _in_student = False
        signal.setitimer(STATEMENT_TIMER, 0)
    if _timed_out:
        raise StatementTimeout


class _RunState:
    """One run of the file (one configuration) inside the student process. The runs of a job go
    through the file together, a statement at a time, so that one exchange with the grader after
    each statement serves them all."""

    def __init__(self, number: int, channel: _Channel, the_plan: Plan, compiled, guard: Guard, filename: str,
                 scope: dict, given: dict, options: Options, probes: dict, bounds: dict[str, int], limit: float):
        self.number, self.channel, self.plan, self.compiled, self.guard = number, channel, the_plan, compiled, guard
        self.size = sum(t.numel() for t in scope.values() if isinstance(t, torch.Tensor))  # the order of sizes
        self.filename, self.options, self.probes, self.bounds = filename, options, probes, bounds
        self.tensors = {name: t for name, t in scope.items() if isinstance(t, torch.Tensor)}
        self.namespace = guard.globals()
        self.namespace.update({name: v for name, v in scope.items() if not isinstance(v, torch.Tensor)})
        self.injected: dict[str, torch.Tensor] = dict(given)
        self.finishing: dict[int, list[str]] = {}
        for name, index in the_plan.final.items():
            self.finishing.setdefault(index, []).append(name)
        self.failed: set[str] = set()
        self.tainted: dict[str, Violation] = {}  # name -> the refused access its value came from
        self.own = _own_names(the_plan)
        self.blank_lines = {name: st.line for st in the_plan.statements if st.blank
                            for name in st.names.assigned}
        self.handed_out: list[tuple[weakref.ref, int, str]] = []  # answered gradients handed out, to see aliases
        self.mutated: set[str] = set()
        self.given_out: dict[str, tuple[torch.Tensor, int]] = {}  # name -> (the copy in scope, its version then)
        self.output = _BoundedText(MAX_OUTPUT)
        self.limit = limit  # CPU seconds a statement may use (`statement_cpu`)
        self.stopped = False
        self.out_of_time = False  # stopped by a statement's CPU time

    def send(self, header: dict, payload: bytes = b"") -> None:
        self.channel.send({**header, "run": self.number}, payload)

    def receive(self, due: dict[str, torch.Tensor]) -> None:
        for name, tensor in due.items():
            self.injected[name] = tensor
            self.tainted.pop(name, None)

    def _restore_all(self) -> None:
        """Before every statement, nothing the student did to the forward tensors and the injected
        gradients sticks: each is a fresh copy again unless the one in scope is still ours and
        unchanged (its version counter says). One pass finds the few that are not."""
        namespace, given_out = self.namespace, self.given_out
        for sources, watch in ((self.tensors, False), (self.injected, True)):
            stale = [name for name in sources if (current := given_out.get(name)) is None
                     or namespace.get(name) is not current[0] or current[0]._version != current[1]]
            for name in stale:
                self._restore(name, sources[name], watch=watch and name in self.plan.final)

    def _restore(self, name: str, tensor: torch.Tensor, watch: bool) -> None:
        """A fresh copy of `tensor` in scope as `name`."""
        copy = tensor.clone()
        self.namespace[name] = copy
        self.given_out[name] = (copy, copy._version)
        if watch:
            self.handed_out.append((weakref.ref(copy), copy._version, name))

    def step(self, statement: Statement, budget: float, limit_said: float | None = None) -> None:
        """Run one statement, within `budget` CPU seconds, and send what it answered. `limit_said`: the
        limit to name should it run out (a smaller size's, when that one ran out first)."""
        torch.set_default_dtype(torch.float64 if self.options.float64 else torch.float32)
        sys.stdout = sys.stderr = self.output
        namespace, guard = self.namespace, self.guard
        if not statement.blank:  # (a blank runs nothing: the next statement restores what it needs)
            self._restore_all()
        code, refused = self.compiled[statement.index] if not statement.blank else (None, None)
        found: list[Violation] = [refused] if refused else []
        crashed = None
        if code is not None:
            mark = len(guard.violations)
            guard.autograd_off(statement.line)
            try:
                _run_student(code, namespace, budget)
            except StatementTimeout:
                line = statement.line
                self.send({"t": "stop", "line": line, "cut": f"time limit at line {line}",
                           "message": f"line {line} used more than {limit_said or budget:.2g} s of CPU, the limit "
                                      f"for one statement (an endless loop?): grading stopped there"})
                self.stopped = self.out_of_time = True
                return
            except (SystemExit, KeyboardInterrupt) as exc:
                line, _ = _student_error(exc, self.filename, statement.line)
                what = "calls exit()" if isinstance(exc, SystemExit) else "raises KeyboardInterrupt"
                self.send({"t": "stop", "line": line, "message": f"line {line} {what}: grading stopped there"})
                self.stopped = True
                return
            except Forbidden:
                pass  # recorded by the guard
            except BaseException as exc:  # noqa: BLE001 - student code may raise anything
                crashed = exc
            guard.autograd_off(statement.line)
            found += guard.violations[mark:]
        self._judge_policy(statement, found, crashed)
        for ref, version, name in self.handed_out:
            copy = ref()
            if copy is not None and copy._version != version and name not in self.mutated:
                self.mutated.add(name)
                self.send({"t": "mutated", "name": name, "line": statement.line})
        if self.options.probe and not statement.blank:  # the lecture's run: where a split gradient goes wrong
            for name in statement.assigns - self.failed - set(self.finishing.get(statement.index, ())):
                if isinstance(namespace.get(name), torch.Tensor):
                    header, payload = encode_value(namespace[name], self.bounds.get(name))
                    if header["kind"] == "tensor":
                        self.send({"t": "partial", "name": name, "line": statement.line, **header}, payload)
        for name in self.finishing.get(statement.index, []):
            if name in self.failed or statement.blank:
                continue
            if name in namespace:
                header, payload = encode_value(namespace[name], self.bounds.get(name))
                self.send({"t": "answer", "name": name, "line": statement.line, **header}, payload)
                if name in self.probes and code is not None:
                    self._probe(name)
            else:
                self.send({"t": "error", "names": [name], "line": statement.line,
                           "message": f"NameError: `{name}` was deleted"})
                self.failed.add(name)

    def _judge_policy(self, statement: Statement, found: list[Violation], crashed: BaseException | None) -> None:
        """A refused access here, or a value read here that came from one, fails what this statement
        assigns; that comes before any exception it raised (a NameError for a refused helper)."""
        origin = None
        if not statement.blank:
            origin = found[0] if found else next(
                (self.tainted[n] for n in sorted(_reads_before(statement.names)) if n in self.tainted), None
            ) if self.tainted else None
        names = sorted(statement.assigns - self.failed)
        if origin is not None:
            # What it assigned, and (when it was refused itself) the student's own values it touched,
            # e.g. `t` in `getattr(t, 'requires_grad_')()`; never what is restored before every line.
            touched = statement.names.assigned | ((statement.names.reads & self.own) if found else set())
            for name in touched - set(self.tensors) - set(self.injected):
                if not isinstance(self.namespace.get(name), types.ModuleType):
                    self.tainted[name] = origin
            message = origin.hint() if found else origin.tainted_hint()
            if names:
                self.send({"t": "error", "names": names, "line": origin.line or statement.line,
                           "message": message, "policy": origin.policy})
                self.failed.update(names)
            elif found:
                self.send({"t": "note", "line": origin.line or statement.line, "message": origin.hint(where=False)})
        elif crashed is not None:
            line, message = _student_error(crashed, self.filename, statement.line)
            if isinstance(crashed, NameError) and getattr(crashed, "name", None) in self.blank_lines:
                message = f"NameError: `{crashed.name}` is still blank (line {self.blank_lines[crashed.name]})"
            if names:
                self.send({"t": "error", "names": names, "line": line, "message": message})
                self.failed.update(names)
            else:
                self.send({"t": "note", "line": line, "message": message})

    def _probe(self, name: str) -> None:
        """Re-run the statements that computed `name` (`diagnose.probe_slice`) with random upstream
        gradients, in a scratch scope, and send what they give."""
        indices, upstream = self.probes[name]
        codes = [self.compiled[i][0] for i in indices]
        if any(code is None for code in codes):
            return
        reads = set().union(*(code.co_names for code in codes))  # the global names the statements read
        scratch = dict(self.namespace)
        scratch.update({key: t.clone() for key, t in self.tensors.items() if key in reads})
        scratch.update({key: t.clone() for key, t in upstream.items()})
        mark = len(self.guard.violations)
        printed, sys.stdout, sys.stderr = sys.stdout, _BoundedText(0), _BoundedText(0)
        try:
            for code in codes:
                _run_student(code, scratch, self.limit)
        except BaseException:  # noqa: BLE001 - a probe that cannot run says nothing
            return
        finally:
            del self.guard.violations[mark:]
            sys.stdout = sys.stderr = printed
        if name in scratch:
            header, payload = encode_value(scratch[name], self.bounds.get(name))
            if header["kind"] == "tensor":
                self.send({"t": "probe", "name": name, **header}, payload)

    def finish(self) -> None:
        self.send({"t": "output", "text": self.output.getvalue()})
        self.send({"t": "done"})


def _execute(channel: _Channel, the_plan: Plan, states: list[_RunState]) -> None:
    """Every run through the file together; after each statement, one exchange with the grader."""
    for number, due in channel.next(-1).items():
        states[number].receive(due)
    # Runs at several sizes go smallest first, and a statement's time at one size bounds it at the next
    # (`GROWTH`); runs all of one size (a training run's steps) share the statement's limit as they come.
    growing = len({state.size for state in states}) > 1
    order = sorted(states, key=lambda state: state.size) if growing else states
    for statement in the_plan.statements:
        left = states[0].limit if states else 0.0  # one statement's CPU time, for all its runs together
        allowance, exceeded = (FIRST_SIZE_CPU if growing else left), None
        for state in order:
            if not state.stopped:
                budget = max(min(left, allowance), MIN_SLICE)
                started = user_time()
                state.step(statement, budget, exceeded)
                used = user_time() - started
                left -= used
                allowance = max(FIRST_SIZE_CPU, GROWTH * used)
                if state.out_of_time:
                    exceeded = exceeded or budget
                if exceeded is not None:  # a size that ran out of time leaves the larger ones the least
                    allowance = MIN_SLICE
        if all(state.stopped for state in states):
            break
        for number, due in channel.next(statement.index).items():
            states[number].receive(due)
    for state in states:
        state.finish()
    channel.flush()


def _compile_statements(the_plan: Plan, source: str, filename: str,
                        given: dict[int, types.CodeType] | None = None) -> dict[int, tuple]:
    """Each statement compiled under the guard, once per process: index -> (code, violation). The
    guard rewrites the tree it compiles, so it gets a fresh one, not the plan's. `given`: the
    statements the grader has compiled already (`precompile`)."""
    given = given or {}
    fresh = None
    compiled = {}
    for st in the_plan.statements:
        if st.blank:
            continue
        if st.index in given:
            compiled[st.index] = (given[st.index], None)
            continue
        fresh = fresh or _parse(source, filename).body
        compiled[st.index] = compile_student(fresh[st.index], filename)
    return compiled


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")  # a line as the parser counts them
CODE_CACHE = 4096  # compiled statements the grader keeps (`precompile`)
_codes: dict[tuple, types.CodeType] = {}


def precompile(the_plan: Plan, source: str, filename: str) -> bytes:
    """The statements of a file that compile cleanly under the guard, compiled in the grader and
    marshalled for its student process (index -> code). The files of a class share most of their
    statements: a statement is compiled once for all of them, keyed by its place and the whole
    text of its lines, which together fix the code it compiles to (then given the file's name). A
    statement the guard refuses is left to the student process, which compiles it and reports it."""
    lines = _LINE.findall(source)
    fresh = None
    out = {}
    for st in the_plan.statements:
        if st.blank:
            continue
        node = st.node
        key = (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset,
               "".join(lines[node.lineno - 1: node.end_lineno]))
        code = _codes.get(key)
        if code is None:
            fresh = fresh or _parse(source, filename).body
            code, _ = compile_student(fresh[st.index], _ANY_FILE)
            if code is None:
                continue
            if len(_codes) >= CODE_CACHE:
                del _codes[next(iter(_codes))]  # the oldest
            _codes[key] = code
        out[st.index] = _named(code, filename)
    return marshal.dumps(out)


_ANY_FILE = "<statement>"


def _named(code: types.CodeType, filename: str) -> types.CodeType:
    """`code` as compiled from `filename` (its nested functions and comprehensions too)."""
    consts = tuple(_named(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def run_job(job: str, read_fd: int, write_fd: int, output) -> None:
    """The body of a student process: read the job from the grader, then run it.

    `execute`: runs of a file, each against one reference, going through the file together, then
    as many more jobs of runs as the grader sends (see `Session`); `train`: a training run on the
    student's gradients (`grader.training`)."""
    messages = Reader(read_fd, None, limit=None).messages()
    job_read = read_job(messages)
    if job_read is None:
        return
    args, tensors = job_read
    if job == "execute":
        from grader.diagnose import probe_upstream
        from grader.exercises import BY_ID

        exercise = BY_ID[args["exercise"]]
        the_plan = Plan.from_wire(args["plan"], exercise.graded)
        guard = Guard(args["filename"], tuple(args["allowed"]))
        compiled = _compile_statements(the_plan, args["source"], args["filename"],
                                       marshal.loads(tensors["code"]) if "code" in tensors else None)
        channel = _Channel(write_fd, messages)
        while True:  # the grader may ask for more runs of the same file (`Session`)
            states = []
            for number, run in enumerate(args["runs"]):
                options = Options(**run["options"])
                probes: dict[str, dict[str, torch.Tensor]] = {}
                if run["public"] is not None:
                    shown = public(Config.from_dict(run["public"][0]), DTYPES[run["public"][1]])
                    scope = {n: t for n, t in shown.tensors.items() if exercise.scope is None or n in exercise.scope}
                    scope.update(shown.sizes)
                    probes = {name: (tuple(indices), probe_upstream(shown, name, upstream))
                              for name, (indices, upstream) in run.get("probes", {}).items()}
                else:
                    scope = {name: tensors[(number, "scope", name, None)] for name in run["tensors"]}
                    scope.update(run["sizes"])
                given = {name: tensors[(number, "given", name, None)] for name in run["given"]}
                states.append(_RunState(number, channel, the_plan, compiled, guard, args["filename"], scope, given,
                                        options, probes, args["bounds"], args["limit"]))
            _execute(channel, the_plan, states)
            job_read = read_job(messages)
            if job_read is None:
                return
            args, tensors = job_read
    elif job == "train":
        from grader.training import train_body

        train_body(write_fd, output, **args)
    else:
        raise ValueError(f"unknown job {job!r}")


# --- the grader's side ---


class LocalExecutor:
    """Starts student processes for this process (`grade FILE`, watch, Gradescope) from a clean
    worker: one that has imported torch and the runner, and never held a reference gradient,
    a submission or a grader cache (see `grader.sandbox.Worker`)."""

    def __init__(self):
        self.worker = None
        self.lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """In a process forked from this one (a `multiprocessing` pool, say): the parent's worker is
        the parent's. Two processes sharing one worker's socket would read each other's replies."""
        self.worker = None
        self.lock = threading.Lock()

    def start(self, bwrap: str | None = None) -> None:
        """Start the worker now (the CLI does, before anything is computed, so that it can be forked
        from this process rather than started as a new interpreter)."""
        from grader.sandbox import Worker

        with self.lock:
            if self.worker is None:
                self.worker = Worker(bwrap, fork=_clean())

    def spawn(self, job: str, timeout: float | None, shared=(None, ())):
        self.start()
        return self.worker.spawn(job, timeout, shared)

    def prepare(self, shared=(None, ())) -> None:
        self.start()
        self.worker.prepare(shared)

    def release(self, handle) -> None:
        self.worker.release(handle)

    def reap(self, handle):
        return self.worker.reap(handle)


def _clean() -> bool:
    """Whether this process has computed nothing a student may not see, so a worker may be forked
    from it: no reference, no training run, no submission read (only the CLI's start is)."""
    from grader import network

    training, diagnose = sys.modules.get("grader.training"), sys.modules.get("grader.diagnose")
    return (network.reference.cache_info().currsize == 0 and threading.active_count() == 1
            and (training is None or training.autograd_run.cache_info().currsize == 0)
            and (diagnose is None or diagnose.probe_slice.cache_info().currsize == 0)
            and plan.cache_info().currsize == 0 and _parse_once.cache_info().currsize == 0
            and facts.cache_info().currsize == 0 and not _codes and encode_once.cache_info().currsize == 0)


LOCAL = LocalExecutor()
_thread = threading.local()


def current_executor():
    """The executor student processes are started with in this thread (batch workers set their own)."""
    return getattr(_thread, "executor", LOCAL)


def use_executor(executor) -> None:
    _thread.executor = executor


def ran_out_of_time(error: str | None) -> bool:
    """Whether a file's error is one of the time limits: the whole file's (`time limit of 5 s
    exceeded`) or one statement's (`used more than 0.1 s of CPU, the limit for one statement`)."""
    return bool(error) and ("time limit" in error or "the limit for one statement" in error)


def incidents() -> list[str]:
    """What happened to this thread's student processes that they may not have caused themselves
    (a signal the grader did not send, a time limit reached with little CPU used): a batch grades
    such a submission once more, alone. Reading the list empties it."""
    found = getattr(_thread, "incidents", [])
    _thread.incidents = []
    return found


def _incident(what: str) -> None:
    if not hasattr(_thread, "incidents"):
        _thread.incidents = []
    _thread.incidents.append(what)


@dataclass
class RunSpec:
    """One run of a file: the reference it is judged against, and how it runs."""

    config: Config
    dtype: torch.dtype = torch.float32
    step: int | None = None
    options: Options = field(default_factory=Options)
    ref: Reference | None = None  # given, or computed from the fields above
    probes: dict | None = None  # for a run that probes: target -> its random upstream (`diagnose.probe_inputs`)

    def reference(self) -> Reference:
        if self.ref is None:
            if self.step is not None:
                from grader.training import autograd_run

                self.ref = autograd_run(self.config)[0][self.step]
            else:
                self.ref = reference(self.config, self.dtype)
        return self.ref


def release_points(the_plan: Plan, targets: tuple[str, ...]) -> dict[str, int]:
    """After which statement each target's reference gradient may be handed to the student process:
    once the target and every target before it in backward order have had their final statement
    (-1: from the start). So a reference is never in scope for a line that answers a target it
    could be worked back from (`dh = dhpreact / (1 - h**2)` with `dhpreact` left blank above it)."""
    points, latest = {}, -1
    for target in targets:
        latest = max(latest, the_plan.final.get(target, -1))
        points[target] = latest
    return points


def _job(exercise, source: str, filename: str, specs: list[RunSpec], allowed: tuple[str, ...],
         sizes: dict[str, int], the_plan: Plan):
    """The execute job's arguments, the tensors that go with them, and the configurations whose
    forward pass the worker computes once and shares with every student process (`network.public`):
    for those, no tensor is sent. A state along exercise 4's training trajectory is sent whole (the
    worker could only compute it with gradients). `sizes`: each target's element count, which
    bounds its answer."""
    runs, tensors, shared = [], [], []
    for number, spec in enumerate(specs):
        run = dict(given=list(exercise.given), options=dataclasses.asdict(spec.options), public=None)
        if spec.step is None:
            run["public"] = [spec.config.to_dict(), dtype_name(spec.dtype)]
            shared.append(run["public"])
            if spec.probes:  # the statements to re-run for each, and which random values they read
                run["probes"] = _probe_plan(exercise, the_plan, public(spec.config, spec.dtype), spec.probes)
        else:
            ref = spec.reference()
            scope = {n: t for n, t in ref.tensors.items() if exercise.scope is None or n in exercise.scope}
            tensors += [(number, "scope", name, None, tensor) for name, tensor in scope.items()]
            run.update(tensors=sorted(scope), sizes=dict(ref.sizes))
        tensors += [(number, "given", name, None, spec.reference().gradients[name[1:]]) for name in exercise.given]
        runs.append(run)
    bounds = {t: max_elements(n) for t, n in sizes.items()}
    args = dict(exercise=exercise.id, source=source, filename=filename, runs=runs, allowed=list(allowed),
                bounds=bounds)
    return args, tensors, shared


def _probe_plan(exercise, the_plan: Plan, shown: Public, probes: dict) -> dict:
    """What a student process needs to probe: for each target, the statements of its probe slice and
    the names of the random upstream values they get (which it draws itself: `probe_upstream`)."""
    from grader.diagnose import probe_slice, provided_names

    provided = provided_names(exercise, shown)
    return {name: [list(probe_slice(the_plan, name, provided)[0]), sorted(upstream)] for name, upstream in probes.items()}


def shared_public(exercise_id: str | None, shared) -> None:
    """In a worker, before it forks: the forward passes its student processes will read, and the
    random upstream values of the probes (all public; never a gradient)."""
    from grader.diagnose import warm_probes
    from grader.exercises import BY_ID

    for config, dtype in shared:
        shown = public(Config.from_dict(config), DTYPES[dtype])
        if exercise_id in BY_ID:
            warm_probes(BY_ID[exercise_id], shown)


def send_job(write_fd: int, args: dict, tensors, deadline: float, code: bytes = b"") -> None:
    """Write a job to a student process: its arguments, its tensors, the statements compiled for
    it (`precompile`, with the first job of a process), then the end."""
    send_by(write_fd, {"t": "job", "args": args}, deadline=deadline)
    for run, group, name, target, tensor in tensors:
        header, payload = encode_value(tensor)
        send_by(write_fd, {"t": "tensor", "run": run, "group": group, "name": name, "target": target, **header},
                payload, deadline)
    if code:
        send_by(write_fd, {"t": "code"}, code, deadline)
    send_by(write_fd, {"t": "end"}, deadline=deadline)


class Session:
    """One student process for a file, kept for every job of runs its grading asks for (an exercise
    of lines asks one; a training exercise may ask more), so that the file is compiled once.

    A run that ends in an error (a time limit, a crash, malformed data) ends the process; a later
    run starts a fresh one. Each `run` call has its own time limit."""

    RUNS = 6  # the CPU seconds of a process: this many time limits

    def __init__(self, *, source: str, filename: str, exercise, timeout: float = DEFAULT_TIMEOUT,
                 allowed: tuple[str, ...] | None = None):
        self.source, self.filename, self.exercise, self.timeout = source, filename, exercise, timeout
        self.allowed = exercise.allowed if allowed is None else allowed
        self.plan = plan(source, filename, exercise.graded)
        self.points = release_points(self.plan, exercise.graded)
        self.executor = current_executor()
        if exercise.kind != "training":  # the worker computes the forward passes while this process works
            self.executor.prepare((exercise.id, shared_for(exercise)))
        first = first_public(exercise)
        self.sizes = {t: math.prod(first.shapes[exercise.tensor_of(t)]) for t in exercise.graded}
        self.process = None  # (handle, read_fd, write_fd, messages, reader)
        self.runs: list[Run] = []  # those of the current process, for what its exit says

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self, shared) -> None:
        handle, read_fd, write_fd = self.executor.spawn("execute", self.timeout * self.RUNS, (self.exercise.id, shared))
        os.set_blocking(write_fd, False)
        reader = Reader(read_fd, time.monotonic() + self.timeout)
        self.process = (handle, read_fd, write_fd, reader.messages(lambda h: check_frame(h, self.sizes)), reader)
        self.runs = []

    def run(self, specs: list[RunSpec], idle=()) -> list[Run]:
        """`idle`: the grader's own work (functions whose results are cached), done while it waits
        for the student process."""
        runs = [_new_run(self.plan) for _ in specs]
        if self.exercise.kind != "training" and all(map(_inert, self.plan.statements)):
            return runs  # nothing would run (an untouched stub): every answer is blank or missing already
        for spec in specs:  # the references, while the worker computes what the student process reads
            spec.reference()
        args, tensors, shared = _job(self.exercise, self.source, self.filename, specs, self.allowed, self.sizes,
                                     self.plan)
        args["limit"] = statement_cpu(self.timeout)
        code = b""
        if self.process is None:
            # The worker computes, once, every forward pass this file's grading may need.
            shared = [*shared, *self._later_shared()]
            try:
                self._start(shared)
            except WorkerDied as exc:
                for run in runs:
                    run.error = str(exc)
                    _fill_unanswered(run, self.exercise.graded)
                return runs
            code = precompile(self.plan, self.source, self.filename)  # while the new process starts
            args["plan"] = self.plan.to_wire()
        _, _, write_fd, messages, reader = self.process
        reader.deadline = time.monotonic() + self.timeout
        try:
            send_job(write_fd, args, tensors, reader.deadline, code)
        except (TimeoutError, BrokenPipeError):
            pass  # the process is gone or stuck: reading says which
        dues = [_Due(spec.reference(), self.exercise, self.plan, self.points, spec.options.inject) for spec in specs]
        reader.idle = list(idle)
        _collect(messages, runs, self.plan, self.timeout, dues, write_fd, reader)
        reader.idle = []
        self.runs += runs
        if any(run.error for run in runs):
            self.close()
        for run in runs:
            _fill_unanswered(run, self.exercise.graded)
        return runs

    def _later_shared(self) -> list:
        if self.exercise.kind == "training":
            return []
        return shared_for(self.exercise)[-1:]

    def close(self) -> None:
        if self.process is None:
            return
        handle, read_fd, write_fd, _, _ = self.process
        self.process = None
        os.close(read_fd)
        os.close(write_fd)
        if any(run.error for run in self.runs):  # how it ended may not be the student's doing: ask
            _note_incidents(self.runs, self.executor.reap(handle), self.timeout)
        else:
            self.executor.release(handle)


def shared_for(exercise) -> list:
    """The forward passes an exercise of lines is graded on, each at its sizes, and its first in
    float64 (for a near miss): what a worker computes once for the student processes it forks."""
    return [*([c.to_dict(), "float32"] for c in exercise.configs), [exercise.configs[0].to_dict(), "float64"]]


def first_public(exercise) -> Public:
    """The shapes of an exercise's first reference, without computing a gradient when avoidable."""
    if exercise.kind == "training":
        from grader.training import autograd_run

        return autograd_run(exercise.configs[0])[0][0].public
    return public(exercise.configs[0])


def _note_incidents(runs: list[Run], exit_info: dict | None, timeout: float) -> None:
    """Record what may not be the student's doing (see `incidents`)."""
    if not exit_info:
        return
    for run in runs:
        if run.error is None:
            continue
        if "ended abruptly" in run.error and exit_info.get("signal"):
            _incident(f"killed by signal {exit_info['signal']}")
        elif run.error.startswith("time limit") and exit_info.get("cpu", 0.0) < timeout / 10:
            _incident("ran out of time while using little CPU")  # stopped or starved, not looping


class _Due:
    """The grader's side of teacher forcing for one run: after each statement, which reference
    gradients the student process gets now (`release_points`), and only those. It counts the
    statements itself and checks that every answer due has come, so a process that skips ahead
    (a forged `next`) or answers twice is malformed, not rewarded."""

    def __init__(self, ref: Reference, exercise, the_plan: Plan, points: dict[str, int], inject: bool):
        self.ref, self.exercise, self.plan, self.points, self.inject = ref, exercise, the_plan, points, inject
        self.answered: set[str] = set()  # answered with a value (the chained run keeps those)
        self.received: set[str] = set()  # answered or failed
        self.sent: set[str] = set()
        self.stopped = False
        # `after` comes once for each statement, in order (`_collect` sees to it): what each one finishes
        # and releases is worked out once.
        self.finishing: dict[int, list[str]] = {}
        for name, final in the_plan.final.items():
            if not the_plan.statements[final].blank:
                self.finishing.setdefault(final, []).append(name)
        self.releasing: dict[int, list[str]] = {}
        for name, point in points.items():
            self.releasing.setdefault(point, []).append(name)

    def receive(self, name: str, answered: bool) -> None:
        if name in self.received:
            raise Malformed("a second answer for one gradient")
        self.received.add(name)
        if answered:
            self.answered.add(name)

    def same(self, name: str, header: dict, payload: bytes) -> torch.Tensor | None:
        """The reference itself, when an answer is it to the bit (most are: then there is nothing to
        decode, and `compare` finds it exact at once). Judging only reads an answer's value."""
        expected = self.ref.gradients.get(self.exercise.tensor_of(name))
        if expected is None:
            return None
        shown, data = encode_once(expected)
        if header.get("dtype") == shown["dtype"] and header.get("shape") == shown["shape"] and payload == data:
            return expected
        return None

    def after(self, index: int) -> list[tuple[str, torch.Tensor]]:
        if self.stopped:
            return []
        if any(name not in self.received for name in self.finishing.get(index, ())):
            raise Malformed("a statement done without its answer")
        due = []
        for name in self.releasing.get(index, ()):
            if name in self.sent or (not self.inject and name in self.answered):
                continue  # (chained: the student's own value stays)
            self.sent.add(name)
            due.append((name, self.ref.gradients[self.exercise.tensor_of(name)]))
        return due


_INERT_IMPORTS = {("torch", None), ("torch.nn.functional", "F")}  # what every stub imports, already in scope


def _inert(statement: Statement) -> bool:
    """Whether running a statement could not change a run: a blank, `pass`, a docstring, or a stub's
    own `import torch` or `import torch.nn.functional as F`."""
    node = statement.node
    if statement.blank or isinstance(node, ast.Pass):
        return True
    if isinstance(node, ast.Expr):
        return isinstance(node.value, ast.Constant)
    return isinstance(node, ast.Import) and all((alias.name, alias.asname) in _INERT_IMPORTS for alias in node.names)


def _new_run(the_plan: Plan) -> Run:
    """A run's answers before anything runs: the missing and the blank targets."""
    run = Run(plan=the_plan)
    for name in the_plan.missing:
        run.answers[name] = Answer(name=name, kind="missing")
    for name, index in the_plan.final.items():
        statement = the_plan.statements[index]
        if statement.blank:
            run.answers[name] = Answer(name=name, line=statement.line, kind="blank")
    return run


MAX_NOTES = 50


def _collect(messages, runs: list[Run], the_plan: Plan, timeout: float, dues: list[_Due], write_fd: int,
             reader: Reader) -> None:
    """Read the runs' messages, up to every run's `done`, into `runs`, answering each `next` with the
    reference gradients due; a time limit, a crash or malformed data becomes the error of every run
    not done yet."""
    current_line = the_plan.statements[0].line if the_plan.statements else None
    finished = [False] * len(runs)
    partial_lines = {name: {st.line for st in the_plan.statements if name in st.assigns and st.index != index}
                     for name, index in the_plan.final.items()}
    problem, cut, statement = None, None, -1  # (statement: the next one the process must say it has done)
    try:
        for header, payload in messages:
            kind = header["t"]
            if kind == "next":
                if header["index"] != statement or statement >= len(the_plan.statements):
                    raise Malformed("a statement out of order")
                statement += 1
                items = [(number, name, tensor) for number, due in enumerate(dues) if not finished[number]
                         for name, tensor in due.after(header["index"])]
                reply, data = pack_tensors(items)
                send_by(write_fd, reply, data, reader.deadline)
                if statement < len(the_plan.statements):  # the one it runs now, should it hang
                    current_line = the_plan.statements[statement].line
                continue
            if "run" not in header:
                if kind == "stop":  # the process as a whole: it could not start, or the runner failed
                    problem = header["message"]
                    break
                raise Malformed("a message for no run")
            number = header["run"]
            if not 0 <= number < len(runs) or finished[number]:
                raise Malformed("a message for a run that is not running")
            run, due, name = runs[number], dues[number], header.get("name")
            if kind == "answer" and name in the_plan.final:
                due.receive(name, answered=True)
                if header["kind"] == "tensor":
                    value = due.same(name, header, payload)
                    run.answers[name] = Answer(name=name, line=header["line"],
                                               value=decode_tensor(header, payload) if value is None else value)
                else:
                    run.answers[name] = Answer(name=name, line=header["line"], kind="other",
                                               description=str(header.get("description", "")))
            elif kind == "error":
                for failed in header["names"]:
                    if failed in the_plan.final:
                        due.receive(failed, answered=False)
                        run.answers[failed] = Answer(name=failed, line=header["line"], kind="error",
                                                     message=header["message"], policy=header.get("policy"))
            elif kind == "probe" and name in the_plan.final and header["kind"] == "tensor":
                run.probes[name] = decode_tensor(header, payload)
            elif kind == "partial" and name in the_plan.final and header["kind"] == "tensor" \
                    and header["line"] in partial_lines.get(name, ()) \
                    and all(line != header["line"] for line, _ in run.partials.get(name, ())):
                run.partials.setdefault(name, []).append((header["line"], decode_tensor(header, payload)))
            elif kind == "mutated" and name in the_plan.final:
                run.mutated.setdefault(name, header["line"])
            elif kind == "note" and len(run.notes) < MAX_NOTES:
                run.notes.append(f"line {header['line']}: {header['message']} (a line that assigns no graded gradient)")
            elif kind == "stop":
                run.error, run.cut = header["message"], header.get("cut")
                due.stopped = True
            elif kind == "output":
                run.output = header["text"][: MAX_OUTPUT + 40]
            elif kind == "done":
                finished[number] = True
                if all(finished):
                    break
    except TimeoutError:
        where = f" (still running line {current_line})" if current_line else ""
        problem = f"time limit of {timeout:g} s exceeded{where}"
        cut = f"time limit at line {current_line}" if current_line else "time limit"
    except Malformed:
        problem = "the submission's process sent malformed data"
    except (BrokenPipeError, ConnectionError):
        pass  # it stopped reading: it ended, which the next lines say
    if problem is None and not all(finished):
        where = f" at line {current_line}" if current_line else ""
        problem = f"the student process ended abruptly{where} (os._exit, a signal or a crash)"
    for run, done in zip(runs, finished):
        if not done and run.error is None:
            run.error, run.cut = problem, cut


class WorkerDied(Exception):
    """A grading worker stopped answering; its submission becomes an `error`."""


def _fill_unanswered(run: Run, targets) -> None:
    """Every target the run never answered, after a whole-file problem: not reached, and why."""
    if run.error:
        reason = run.cut or run.error.removesuffix(": grading stopped there")
        for name in targets:
            if name not in run.answers:
                run.answers[name] = Answer(name=name, kind="error", message=f"not reached ({reason})")


def reap(pid: int) -> dict:
    """Kill the child's whole process group (if still alive) and collect its exit: the signal
    that ended it, if any, and the CPU seconds it used."""
    for kill in (os.killpg, os.kill):  # the group, and the child itself in case setsid() had not run
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        _, status, usage = os.wait4(pid, 0)
    except ChildProcessError:
        return {}
    return {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "cpu": usage.ru_utime + usage.ru_stime}
