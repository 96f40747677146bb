"""Run a student's file, one top-level statement at a time, in a separate process.

The plan (which statement makes the final assignment to each gradient, which are
still blank) is worked out here, in the grader's process, from the syntax tree.
A child process then executes the statements with the reference tensors in scope.
As soon as a statement has made its final assignment to `dX`, the child sends a
copy of the student's value back and puts the *reference* gradient in its place,
so that every later line is judged on correct inputs. Before every statement the
forward tensors and the injected gradients are restored from fresh copies when the
student changed them, so no in-place change can leak into another line's verdict.

The child is forked here (single-file `grade`) or by a warm, possibly sandboxed
worker (`grader.sandbox`, batch grading): the *executor* decides, and a job is
named by plain data (`run_job`) so either can start it. Values come back over a
pipe in the format of `grader.wire`: nothing the child writes is ever unpickled or
executed. The child has a wall-clock limit; whatever it sent before it hung,
crashed or exited is kept.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import functools
import faulthandler
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from grader.network import Config, Reference, reference
from grader.wire import Reader, decode_tensor, encode_value, send  # noqa: F401 - the wire, re-exported
from grader.sandbox import drop_privileges, limit_resources

DEFAULT_TIMEOUT = 5.0
MAX_OUTPUT = 4000  # characters of the student's printed output kept



class SubmissionError(Exception):
    """The file cannot be graded at all (unreadable, not Python)."""


@dataclass
class Statement:
    """One top-level statement of the student's file."""

    index: int
    line: int
    node: ast.stmt
    assigns: frozenset[str]  # the target names it assigns or changes in place
    blank: bool  # `dX = ...`: the placeholder is still there


@dataclass(eq=False)  # hashed by identity: plans are cached, and so are facts derived from one
class Plan:
    """The statements of a file and, for each target, the statement that finishes it."""

    statements: list[Statement]
    final: dict[str, int]  # target -> index of its last assigning statement
    missing: list[str]  # targets never assigned

    @property
    def assigned(self) -> set[str]:
        return set(self.final)


@dataclass
class Answer:
    """What the student's file produced for one target."""

    name: str
    line: int | None = None
    value: torch.Tensor | None = None
    kind: str = "tensor"  # tensor | other | blank | missing | error
    description: str = ""  # for `other`: what the value is instead of a tensor
    message: str = ""  # for `error`


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


def read_source(path: str) -> str:
    """The text of a student file, or a `SubmissionError` saying in one sentence why not."""
    try:
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


def assigned_names(node: ast.AST) -> set[str]:
    """Every name a statement binds or changes in place: `x = `, `x[i] += `, `for x in`,
    `x.add_(...)` and the like, anywhere inside it (loops included)."""
    names: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, (ast.Name, ast.Subscript, ast.Attribute, ast.Starred)) and isinstance(
            getattr(child, "ctx", None), (ast.Store, ast.Del)
        ):
            base = _base_name(child)
            if base:
                names.add(base)
        elif isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
            method = child.func.attr
            if method.endswith("_") and not method.startswith("__"):  # in-place: x.index_add_(...)
                base = _base_name(child.func.value)
                if base:
                    names.add(base)
    return names


def _is_blank(node: ast.stmt) -> bool:
    value = getattr(node, "value", None)
    return isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and (
        isinstance(value, ast.Constant) and value.value is Ellipsis
    )


@functools.lru_cache(maxsize=64)
def plan(source: str, filename: str, targets: tuple[str, ...]) -> Plan:
    """Parse a file and find, for each target, the statement that finishes it.
    Raises `SyntaxError` for a file that is not valid Python."""
    tree = ast.parse(source, filename=filename)
    statements, final = [], {}
    for index, node in enumerate(tree.body):
        assigns = frozenset(assigned_names(node) & set(targets))
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
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == filename and frame.lineno:
            line = frame.lineno
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line, message[:300]


def fork_child(body, *, cpu_seconds: float | None = None, workdir: str | None = None,
               drop_root: bool = False) -> tuple[int, int]:
    """Fork a process that runs `body(write_fd, output)` on student code and never returns.

    In the child: its own process group (a timeout kills all it started), no file
    descriptor but the result pipe, resource limits (`sandbox.limit_resources`),
    printed output captured up to a limit (descriptors 1 and 2 go nowhere), no
    stdin, one thread and autograd off. Returns the child's pid and the pipe to read.
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        return pid, read_fd
    try:
        os.close(read_fd)
        os.setsid()
        os.closerange(3, write_fd)  # nothing of the grader's (sockets, result files) stays open
        os.closerange(write_fd + 1, 1 << 16)
        if workdir:
            os.chdir(workdir)
        try:  # PR_SET_PDEATHSIG: the student process dies with the process that forked it
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
        if drop_root:
            drop_privileges()
        limit_resources(cpu_seconds)
        faulthandler.disable()  # a crash in student code is reported by the parent, not dumped on its terminal
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        output = _BoundedText(MAX_OUTPUT)
        sys.stdout = sys.stderr = output
        sys.stdin = io.StringIO("")
        torch.set_num_threads(1)
        torch.set_grad_enabled(False)
    except BaseException as exc:  # noqa: BLE001 - a process that cannot be set up says why, then ends
        try:
            send(write_fd, {"t": "stop", "message": f"the student process could not start: {exc!r}"})
        finally:
            os._exit(1)
    try:
        body(write_fd, output)
    except BaseException as exc:  # noqa: BLE001 - the child must never fall back into the grader
        try:
            send(write_fd, {"t": "stop", "message": f"the grader failed in the student process: {exc!r}"})
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)


@dataclass
class Options:
    """How to run a file: with the reference injected after each answer (line by line) or not
    (chained, as the lecture runs it), and which lines to re-run on random upstream gradients."""

    inject: bool = True
    probe: bool = False  # re-run lines on random upstream gradients (`diagnose.probe_inputs`)
    float64: bool = False  # new tensors default to float64, for a float64 reference


def _execute(write_fd, reference: Reference, the_plan: Plan, filename, targets, output, scope, given,
             options: Options, probes: dict[str, dict[str, torch.Tensor]]) -> None:
    if options.float64:
        torch.set_default_dtype(torch.float64)
    tensors = {name: t for name, t in reference.tensors.items() if scope is None or name in scope}
    gradients = {t: reference.gradients[t[1:]] for t in (*targets, *given)}
    namespace: dict[str, object] = {"__name__": "__student__", "__builtins__": builtins, "torch": torch, "F": F}
    namespace.update(reference.scope(scope))
    injected = {name: gradients[name] for name in (*the_plan.missing, *given)}
    finishing: dict[int, list[str]] = {}
    for name, index in the_plan.final.items():
        finishing.setdefault(index, []).append(name)
    failed: set[str] = set()
    blank_lines = {name: st.line for st in the_plan.statements if st.blank for name in assigned_names(st.node)}
    handed_out: list[tuple[weakref.ref, int, str]] = []  # copies of answered gradients, to see aliases mutate them
    mutated: set[str] = set()

    given_out: dict[str, tuple[torch.Tensor, int]] = {}  # name -> (the copy in scope, its version then)

    def restore(name: str, tensor: torch.Tensor, watch: bool) -> None:
        """A fresh copy, unless the one in scope is still ours and unchanged (its version counter says)."""
        current = given_out.get(name)
        if current is not None and namespace.get(name) is current[0] and current[0]._version == current[1]:
            return
        copy = tensor.clone()
        namespace[name] = copy
        given_out[name] = (copy, copy._version)
        if watch:
            handed_out.append((weakref.ref(copy), copy._version, name))

    for statement in the_plan.statements:
        # Before every statement, nothing the student did to these sticks.
        for name, tensor in tensors.items():
            restore(name, tensor, watch=False)
        for name, tensor in injected.items():
            restore(name, tensor, watch=name in the_plan.final)
        send(write_fd, {"t": "line", "line": statement.line})
        code = None
        if not statement.blank:
            try:
                code = compile(ast.Module(body=[statement.node], type_ignores=[]), filename, "exec")
                exec(code, namespace)
            except (SystemExit, KeyboardInterrupt) as exc:
                line, _ = _student_error(exc, filename, statement.line)
                what = "calls exit()" if isinstance(exc, SystemExit) else "raises KeyboardInterrupt"
                send(write_fd, {"t": "stop", "line": line, "message": f"line {line} {what}: grading stopped there"})
                break
            except BaseException as exc:  # noqa: BLE001 - student code may raise anything
                line, message = _student_error(exc, filename, statement.line)
                if isinstance(exc, NameError) and getattr(exc, "name", None) in blank_lines:
                    message = f"NameError: `{exc.name}` is still blank (line {blank_lines[exc.name]})"
                names = sorted(statement.assigns - failed)
                if names:
                    send(write_fd, {"t": "error", "names": names, "line": line, "message": message})
                    failed.update(names)
                else:
                    send(write_fd, {"t": "note", "line": line, "message": message})
        for ref, version, name in handed_out:
            copy = ref()
            if copy is not None and copy._version != version and name not in mutated:
                mutated.add(name)
                send(write_fd, {"t": "mutated", "name": name, "line": statement.line})
        for name in finishing.get(statement.index, []):
            answered = name not in failed and not statement.blank
            if answered:
                if name in namespace:
                    header, payload = encode_value(namespace[name])
                    send(write_fd, {"t": "answer", "name": name, "line": statement.line, **header}, payload)
                    if name in probes and code is not None:
                        _probe(write_fd, code, namespace, tensors, name, probes[name])
                else:
                    send(write_fd, {"t": "error", "names": [name], "line": statement.line,
                                     "message": f"NameError: `{name}` was deleted"})
            if options.inject or not answered or name not in namespace:
                injected[name] = gradients[name]
    send(write_fd, {"t": "output", "text": output.getvalue()})
    send(write_fd, {"t": "done"})


def _probe(write_fd, code, namespace, tensors, name, upstream: dict[str, torch.Tensor]) -> None:
    """Re-run the statement that answered `name` with random upstream gradients, in a scratch scope."""
    reads = set(code.co_names)  # the global names the statement reads
    scratch = dict(namespace)
    scratch.update({key: t.clone() for key, t in tensors.items() if key in reads})
    scratch.update({key: t.clone() for key, t in upstream.items()})
    try:
        exec(code, scratch)
    except BaseException:  # noqa: BLE001 - a probe that cannot run says nothing
        return
    if name in scratch:
        header, payload = encode_value(scratch[name])
        send(write_fd, {"t": "probe", "name": name, **header}, payload)



DTYPE_NAMES = {"float32": torch.float32, "float64": torch.float64}


def _run_reference(run: dict):
    """The reference one run of a job is judged against."""
    config = Config.from_dict(run["config"])
    if run.get("step") is not None:
        from grader.training import autograd_run

        return autograd_run(config)[0][run["step"]]
    return reference(config, DTYPE_NAMES[run["dtype"]])


def run_job(job: str, args: dict, write_fd: int, output) -> None:
    """The body of a student process, named so that a worker in a sandbox can run it from a request.

    `execute`: runs of a file, each against one reference, one after the other in this process
    (see `run_submissions`); `train`: a training run on the student's gradients (`grader.training`)."""
    if job == "execute":
        from grader.diagnose import probe_inputs
        from grader.exercises import BY_ID

        exercise = BY_ID[args["exercise"]]
        the_plan = plan(args["source"], args["filename"], exercise.targets)
        for run in args["runs"]:
            ref = _run_reference(run)
            options = Options(**run["options"])
            probes = probe_inputs(exercise, ref, the_plan) if options.probe else {}
            output.reset()
            _execute(write_fd, ref, the_plan, args["filename"], exercise.targets, output, exercise.scope,
                     exercise.given, options, probes)
    elif job == "train":
        from grader.training import train_body

        train_body(write_fd, output, **args)
    else:
        raise ValueError(f"unknown job {job!r}")


def warm_job(job: str, args: dict) -> None:
    """Compute, in a long-lived worker, what a job's forked process will read (cached there)."""
    if job == "train":
        from grader.training import training_data

        training_data(Config.from_dict(args["config"]))
        return
    from grader.diagnose import probe_inputs
    from grader.exercises import BY_ID
    from grader.graph import lines_of

    exercise = BY_ID[args["exercise"]]
    lines_of(exercise.forward)  # parsed once here, not in every fork
    try:
        the_plan = plan(args["source"], args["filename"], exercise.targets)
    except SyntaxError:
        return
    for run in args["runs"]:
        ref = _run_reference(run)
        if run["options"].get("probe"):
            probe_inputs(exercise, ref, the_plan)  # its random values are cached here too


class LocalExecutor:
    """Runs student processes as children of this process (the single-file `grade`)."""

    def spawn(self, job: str, args: dict, timeout: float | None) -> tuple[object, int]:
        pid, read_fd = fork_child(lambda write_fd, output: run_job(job, args, write_fd, output),
                                  cpu_seconds=timeout)
        return pid, read_fd

    def reap(self, handle) -> None:
        reap(handle)


LOCAL = LocalExecutor()
_thread = threading.local()


def current_executor():
    """The executor student processes are started with in this thread (batch workers set their own)."""
    return getattr(_thread, "executor", LOCAL)


def use_executor(executor) -> None:
    _thread.executor = executor


def run_submission(
    *, source: str, filename: str, exercise, config: Config, dtype: torch.dtype = torch.float32,
    step: int | None = None, timeout: float = DEFAULT_TIMEOUT, options: Options | None = None,
) -> Run:
    """Execute a student's source against the reference of one configuration and collect an
    `Answer` per target. A `SyntaxError` is raised for source that does not parse."""
    spec = RunSpec(config, dtype, step, options or Options())
    return run_submissions(source=source, filename=filename, exercise=exercise, specs=[spec], timeout=timeout)[0]


@dataclass
class RunSpec:
    """One run of a file: the reference it is judged against, and how it runs."""

    config: Config
    dtype: torch.dtype = torch.float32
    step: int | None = None
    options: Options = field(default_factory=Options)

    def to_dict(self) -> dict:
        return dict(config=self.config.to_dict(), dtype=str(self.dtype).removeprefix("torch."), step=self.step,
                    options=dataclasses.asdict(self.options))


def run_submissions(*, source: str, filename: str, exercise, specs: list[RunSpec],
                    timeout: float = DEFAULT_TIMEOUT) -> list[Run]:
    """Several runs of a file, one after the other in one student process (one fork, not several);
    each has its own time limit. A `SyntaxError` is raised for source that does not parse."""
    the_plan = plan(source, filename, exercise.targets)
    runs = [_new_run(the_plan) for _ in specs]
    executor = current_executor()
    args = dict(exercise=exercise.id, source=source, filename=filename, runs=[spec.to_dict() for spec in specs])
    try:
        handle, read_fd = executor.spawn("execute", args, timeout * len(specs))
    except WorkerDied as exc:
        for run in runs:
            run.error = str(exc)
            _fill_unanswered(run, exercise.targets)
        return runs
    reader = Reader(read_fd, 0.0)
    messages = reader.messages()
    try:
        for number, run in enumerate(runs):
            if number and runs[number - 1].error:
                run.error = f"not run: {runs[number - 1].error}"
                continue
            reader.deadline = time.monotonic() + timeout
            _collect(messages, run, the_plan, timeout)
    finally:
        os.close(read_fd)
        executor.reap(handle)
    for run in runs:
        _fill_unanswered(run, exercise.targets)
    return runs


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


def _collect(messages, run: Run, the_plan: Plan, timeout: float) -> None:
    """Read one run's messages, up to its `done`, into `run`; a time limit or a crash becomes its error."""
    current_line, finished = None, False
    try:
        for header, payload in messages:
            kind = header.get("t")
            if kind == "line":
                current_line = header.get("line")
            elif kind == "answer" and header.get("name") in the_plan.final:
                name = header["name"]
                if header.get("kind") == "tensor":
                    run.answers[name] = Answer(name=name, line=header.get("line"), value=decode_tensor(header, payload))
                else:
                    run.answers[name] = Answer(
                        name=name, line=header.get("line"), kind="other", description=str(header.get("description"))
                    )
            elif kind == "error":
                for name in header.get("names", []):
                    if name in the_plan.final:
                        run.answers[name] = Answer(
                            name=name, line=header.get("line"), kind="error", message=str(header.get("message"))
                        )
            elif kind == "probe" and header.get("name") in the_plan.final and header.get("kind") == "tensor":
                run.probes[header["name"]] = decode_tensor(header, payload)
            elif kind == "mutated" and header.get("name") in the_plan.final:
                run.mutated.setdefault(header["name"], header.get("line"))
            elif kind == "note":
                run.notes.append(f"line {header.get('line')}: {header.get('message')}")
            elif kind == "stop":
                run.error = str(header.get("message"))
            elif kind == "output":
                run.output = str(header.get("text", ""))[: MAX_OUTPUT + 40]
            elif kind == "done":
                finished = True
                break
    except TimeoutError:
        where = f" (still running line {current_line})" if current_line else ""
        run.error = f"time limit of {timeout:g} s exceeded{where}"
    except (ValueError, json.JSONDecodeError):
        run.error = "the student process sent malformed data"
    if not finished and run.error is None:
        where = f" at line {current_line}" if current_line else ""
        run.error = f"the student process ended abruptly{where} (os._exit, a signal or a crash)"


class WorkerDied(Exception):
    """A sandboxed grading worker stopped answering; its submission becomes an `error`."""


def _fill_unanswered(run: Run, targets) -> None:
    if run.error:
        for name in targets:
            if name not in run.answers:
                run.answers[name] = Answer(name=name, kind="error", message=f"not graded: {run.error}")


def reap(pid: int) -> None:
    """Kill the child's whole process group (if still alive) and collect its exit status."""
    for kill in (os.killpg, os.kill):  # the group, and the child itself in case setsid() had not run
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
