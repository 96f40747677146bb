"""Where student code runs: resource limits for every student process, and sandboxed workers.

Every student process (single-file `grade` or batch) gets resource limits: address
space, CPU seconds, file size, no new processes or threads, few open files, no
core dumps. For batch grading, student processes are forked by *workers*: warm
processes that imported torch once and run nothing but forks. With bubblewrap, a
worker lives in a sandbox: a read-only view of just the system and the Python
installation (not the instructor's home, the submissions or the results), a
private empty `/tmp` and working directory, no network, its own PID and user
namespace with no capabilities, and it dies with the grader.

A worker never reads what a student process writes. It hands the read end of
the student's pipe to the grader over a Unix socket (SCM_RIGHTS); the grader
reads, checks and compares, as it does for a process it forked itself.
"""

from __future__ import annotations

import functools
import gc
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

FILE_SIZE_LIMIT = 16 << 20  # bytes a student process may write to one file
MEMORY_HEADROOM = 1 << 30  # address space a student process may add to the warm process's
OPEN_FILES = 64


TMPFS_SIZE = 64 << 20  # bytes of the sandbox's writable /tmp and working directory, each
# Run as root, every student process that runs at the same time as another gets a user of its
# own from this range (numbered by slot), so none can signal, trace or out-count another; no
# account uses these ids. The process limit then also holds: the kernel never applies it to root.
STUDENT_UIDS = range(0x6B6E0000, 0x6B6E0000 + 4096)


def drop_privileges(uid: int) -> None:
    """Become `uid` (from root), with no supplementary groups and no capabilities."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def student_uid(slot: int) -> int:
    return STUDENT_UIDS[slot % len(STUDENT_UIDS)]


def address_space_kb() -> int:
    """This process's address space (VmSize), in kB; 0 when it cannot be read."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@functools.lru_cache(maxsize=1)
def libc():
    """The C library, for `prctl` and `madvise` (loaded once, before the forks that use it)."""
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def limit_resources(cpu_seconds: float | None, size_kb: int | None = None) -> None:
    """Resource limits for a student process, set in the child right after the fork. `size_kb`: the
    address space it starts with (its parent's at the fork), read here when not given."""
    size_kb = address_space_kb() if size_kb is None else size_kb
    limits = [
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT),
        (resource.RLIMIT_NOFILE, OPEN_FILES),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, 1),  # no fork, no thread: a fork bomb stops at the first fork
    ]
    if size_kb:
        limits.append((resource.RLIMIT_AS, size_kb * 1024 + MEMORY_HEADROOM))
    if cpu_seconds is not None:
        limits.append((resource.RLIMIT_CPU, int(cpu_seconds) + 2))
    for kind, value in limits:
        try:
            soft, hard = resource.getrlimit(kind)
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):
            pass


# --- the worker ("zygote") side ---


def _send_json(sock: socket.socket, data: dict, fds: list[int] | None = None) -> None:
    body = json.dumps(data).encode()
    frame = struct.pack(">I", len(body)) + body
    if fds:
        socket.send_fds(sock, [frame], fds)
    else:
        sock.sendall(frame)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _recv_json(sock: socket.socket, with_fds: bool = False):
    if with_fds:
        header, fds, _, _ = socket.recv_fds(sock, 4, 2)
        if not header:
            raise EOFError
        header += _recv_exact(sock, 4 - len(header))
        (length,) = struct.unpack(">I", header)
        return json.loads(_recv_exact(sock, length)), fds
    (length,) = struct.unpack(">I", _recv_exact(sock, 4))
    return json.loads(_recv_exact(sock, length))


def serve(fd: int, slots: int = 4, escape: tuple[str, ...] = (), first_uid: int = 0, warm_all: bool = False,
          huge_pages: bool = False) -> None:
    """A worker's loop: fork a student process per request and pass its two pipes back; reap on
    request. The worker never reads a job: the student process reads its own from the grader, so
    nothing of one submission is ever in the memory the next one is forked from."""
    import numpy  # noqa: F401 - imported here, once: its thread pool cannot start after the process limit
    import torch

    torch.set_num_threads(1)  # before any op: forking stays safe
    from grader import diagnose, exercises, training  # noqa: F401 - imported once here, not in every fork
    from grader.graph import lines_of

    for exercise in exercises.EXERCISES:
        lines_of(exercise.forward)  # the forward pass's statements, parsed once here, not in every fork
    warm_lazy_imports(warm_all)
    from grader import policy
    from grader.execution import fork_child, reap, run_job, shared_public

    policy.escape(tuple(escape))
    if huge_pages:
        use_huge_pages()

    try:
        libc().prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: student processes cannot ptrace us
    except (OSError, AttributeError):
        pass
    sock = socket.socket(fileno=fd)
    base = tempfile.mkdtemp(prefix="grade-")
    live: dict[int, tuple[str, int | None]] = {}  # pid -> (working directory, uid)
    while True:
        try:
            request = _recv_json(sock)
        except (EOFError, OSError, ValueError):
            # The grader has gone or closed us: none of our student processes outlives us.
            for pid, (_, uid) in live.items():
                reap(pid)
                if uid is not None:
                    kill_user(uid)
            shutil.rmtree(base, ignore_errors=True)  # the working folders, which `grade FILE` would leave in /tmp
            os._exit(0)
        if request.get("t") == "spawn":
            job, timeout = request["job"], request.get("timeout")
            if job == "train":
                training.training_data()  # the public data set, loaded once, before any fork
            shared_public(request.get("exercise"), request.get("shared", ()))  # never a gradient
            uid = None
            if os.getuid() == 0:
                taken = {u for _, u in live.values()}
                uid = next(student_uid(first_uid + slot) for slot in range(slots * 64)
                           if student_uid(first_uid + slot) not in taken)
            workdir = tempfile.mkdtemp(dir=base)
            os.chmod(workdir, 0o777)
            # Everything the worker holds moves out of the collector's sight, so that a collection in
            # the student process does not write to (and so copy) every page it shares with us.
            gc.freeze()
            pid, read_fd, write_fd = fork_child(lambda r, w, output: run_job(job, r, w, output),
                                                cpu_seconds=timeout, workdir=workdir, uid=uid)
            live[pid] = (workdir, uid)
            _send_json(sock, {"t": "spawned", "pid": pid}, [read_fd, write_fd])
            os.close(read_fd)
            os.close(write_fd)
        elif request.get("t") == "prepare":  # what the next student processes will read, while the grader works
            shared_public(request.get("exercise"), request.get("shared", ()))  # never a gradient
        elif request.get("t") in ("reap", "release"):
            pid = int(request["pid"])
            # Its user may start no process (the process limit), so ending it ends all it ran.
            info = reap(pid) if pid in live else {}
            workdir, _ = live.pop(pid, ("", None))
            shutil.rmtree(workdir, ignore_errors=True)
            if request["t"] == "reap":  # (a release is not answered: the grader has not waited)
                _send_json(sock, {"t": "reaped", **info})


MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25  # Linux's madvise(2) advice numbers (the second since 6.1)
HUGE_PAGE = 2 << 20


def use_huge_pages() -> None:
    """Move a long-lived worker's private memory (torch's 150 MB and ours) into 2 MB pages, where the
    kernel allows it. Every fork copies the page tables of that memory and every exit tears them
    down: one entry per 2 MB instead of one per 4 KB cuts both. A student process that writes to a
    shared huge page gets only that 4 KB copied (the kernel splits the mapping). Moving costs about
    0.4 s once, so only a batch's workers do it; where the kernel cannot, nothing changes."""
    try:
        import ctypes

        madvise = libc().madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps") as maps:
            regions = [line.split() for line in maps]
    except (OSError, AttributeError):
        return
    for fields in regions:
        path = fields[5] if len(fields) > 5 else ""
        if "w" not in fields[1] or (path and path != "[heap]"):
            continue  # only anonymous, writable memory: the heap and what malloc and Python mapped
        start, end = (int(address, 16) for address in fields[0].split("-"))
        start, end = -(-start // HUGE_PAGE) * HUGE_PAGE, end // HUGE_PAGE * HUGE_PAGE
        if end > start:
            madvise(start, end - start, MADV_HUGEPAGE)
            madvise(start, end - start, MADV_COLLAPSE)


def warm_lazy_imports(everything: bool = False) -> None:
    """Import now what torch and numpy import on first use (printing a tensor, numpy's reductions):
    a student process may not read the files (run as another user) nor import through the guard.
    `everything`: also what a few allowed functions load (`torch.broadcast_shapes` loads sympy, a
    third of a second), for a long-lived worker; `grade FILE`'s own worker cannot wait for it."""
    import numpy
    import torch

    if everything:
        torch.broadcast_shapes((2, 1), (1, 3))
        torch.unravel_index(torch.tensor(3), (2, 2))
        torch.zeros(2, 2).dim_order()

    for value in (torch.zeros(2, 2), torch.zeros(2, dtype=torch.int64), torch.tensor(1.5)):
        repr(value), str(value), f"{value.sum():.3f}"
    array = numpy.zeros((2, 2))
    for method in ("sum", "mean", "max", "min", "std", "var", "prod", "argmax", "round", "cumsum", "all", "any"):
        getattr(array, method)()
    repr(array), str(array.sum())


def kill_user(uid: int) -> None:
    """SIGKILL every process of one student user: nothing it started outlives its grading."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


# --- the grader side ---


def bwrap_path() -> str | None:
    """bubblewrap's path when it is installed and can make a sandbox here."""
    path = shutil.which("bwrap")
    if not path:
        return None
    probe = subprocess.run([path, *_bwrap_options(), "true"], capture_output=True, timeout=30)
    return path if probe.returncode == 0 else None


def _package_path() -> str:
    import grader

    return str(Path(grader.__file__).resolve().parent)


def _readable_paths() -> list[str]:
    """What a worker must see, read-only: the system, the Python installation, the grader and its data."""
    from grader.network import default_words_path

    package = _package_path()
    repo = str(Path(package).parent)
    paths = {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", sys.prefix, sys.base_prefix,
             sys.exec_prefix, package, str(default_words_path().resolve().parent)}
    for entry in sys.path:
        # Installed packages, but never the checkout itself (it may hold submissions or results).
        if entry and os.path.isdir(entry) and not entry.startswith(repo) and entry != os.getcwd():
            paths.add(os.path.realpath(entry))
    existing = sorted(os.path.realpath(p) for p in paths if os.path.exists(p))
    # A path inside another one is already visible.
    return [p for p in existing if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in existing)]


def _bwrap_options() -> list[str]:
    # The private /tmp comes first, so that what is bound below it (a virtualenv or a checkout
    # under /tmp) stays visible on top of it.
    options, made = ["--size", str(TMPFS_SIZE), "--tmpfs", "/tmp"], set()
    paths = _readable_paths()
    for link in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(link):  # merged /usr: the loader is found through these links
            options += ["--symlink", os.readlink(link), link]
            made.add(link)
    for path in paths:
        # Parents bwrap would otherwise create root-only: student users must be able to walk through them.
        for parent in reversed(Path(path).parents):
            if str(parent) != "/" and str(parent) not in made and str(parent) not in paths:
                made.add(str(parent))
                options += ["--perms", "0755", "--dir", str(parent)]
        options += ["--ro-bind", path, path]
    if os.getuid() == 0:
        # As root, keep only what the worker needs to make each student process a user of its own and end it.
        privileges = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    else:
        privileges = ["--unshare-user", "--cap-drop", "ALL"]
    return options + privileges + [
        "--proc", "/proc", "--dev", "/dev", "--size", str(TMPFS_SIZE), "--tmpfs", "/sandbox", "--chdir", "/sandbox",
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--clearenv", "--setenv", "HOME", "/sandbox",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "OPENBLAS_NUM_THREADS", "1",
    ]


class Worker:
    """One warm worker process, with or without a bubblewrap sandbox, driven over a Unix socket.

    It is started as a new interpreter, or, with `fork=True`, forked from this process, which
    must then hold nothing a student may not see (`grader.execution` checks before asking).
    Several grading threads may share a worker: each request and its answer happen under a
    lock, and the student processes themselves run side by side, each as its own user when
    the worker runs as root."""

    count = 0  # workers started by this process: each numbers its student users apart

    def __init__(self, bwrap: str | None, *, fork: bool = False, slots: int = 4, many: bool = False):
        from grader import policy

        self.bwrap, self.fork, self.slots = bwrap, fork and not bwrap, slots
        self.many = many  # it will fork many student processes: worth moving into huge pages first
        self.escape = tuple(policy.ESCAPED)  # () but in the attack suite: see `grader.policy.ESCAPED`
        self.process = None
        self.pid = None
        self.sock = None
        self.lock = threading.Lock()
        self.generation = 0  # a restart makes the old worker's student processes someone else's
        self.closed = False
        self.uid_base = Worker.count * slots * 64
        Worker.count += 1
        self.start()

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.fork:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                try:
                    ours.close()
                    os.setsid()
                    serve(theirs.fileno(), self.slots, self.escape, self.uid_base)
                finally:
                    os._exit(0)
            self.pid = pid
        else:
            # The worker imports the parent's own grader (a checkout run in place, say), not whichever
            # one the interpreter's site finds first: only the parent's is visible in the sandbox. (An
            # installed kit's folder is on the path already, after the standard library: it stays there.)
            root = str(Path(_package_path()).parent)
            code = (f"import sys; {root!r} in sys.path or sys.path.insert(0, {root!r}); "
                    f"from grader.sandbox import serve; "
                    f"serve({theirs.fileno()}, {self.slots}, {self.escape!r}, {self.uid_base}, warm_all=True, "
                    f"huge_pages={self.many})")
            command = [sys.executable, "-c", code]
            if self.bwrap:
                command = [self.bwrap, *_bwrap_options(), *command]
            env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
            self.process = subprocess.Popen(command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                            start_new_session=True)
            self.pid = self.process.pid
        theirs.close()
        self.sock = ours
        self.generation += 1

    def restart(self) -> None:
        if self.closed:
            return  # closed meanwhile (the run is ending): the request that failed stays failed
        self.close()
        self.closed = False
        self.start()

    def close(self) -> None:
        """Stop the worker; it ends its student processes first (users of their own included)."""
        self.closed = True
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid is not None:
            exited, deadline = False, time.monotonic() + 5
            while not exited and time.monotonic() < deadline:
                try:
                    exited = os.waitpid(self.pid, os.WNOHANG) != (0, 0)
                except ChildProcessError:
                    exited = True
                if not exited:
                    time.sleep(0.01)
            if not exited:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    os.waitpid(self.pid, 0)
                except ChildProcessError:
                    pass
            if self.process is not None:
                self.process.returncode = -9  # reaped above
            self.pid = None

    # The executor interface of `grader.execution`.

    def spawn(self, job: str, timeout: float | None, shared=(None, ())) -> tuple[object, int, int]:
        """A new student process for `job`: (handle, the pipe to read its answers, the pipe to
        write its job and reference gradients to). `shared`: the exercise and the configurations
        whose forward pass the worker computes (once) for its student processes to read."""
        from grader.execution import WorkerDied

        with self.lock:
            try:
                _send_json(self.sock, {"t": "spawn", "job": job, "timeout": timeout, "exercise": shared[0],
                                       "shared": list(shared[1])})
                self.sock.settimeout(120)  # the worker imports torch once, the first time
                reply, fds = _recv_json(self.sock, with_fds=True)
                self.sock.settimeout(None)
            except (EOFError, OSError, ValueError, AttributeError):
                self.restart()
                raise WorkerDied("the grading worker stopped; this submission was not graded") from None
            if reply.get("t") != "spawned" or len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                self.restart()
                raise WorkerDied("the grading worker answered nonsense; this submission was not graded")
            return (self.generation, int(reply["pid"])), fds[0], fds[1]

    def prepare(self, shared=(None, ())) -> None:
        """Have the worker compute now, while this process does its own work, the forward passes
        `spawn` will ask for (see there)."""
        self._tell({"t": "prepare", "exercise": shared[0], "shared": list(shared[1])})

    def release(self, handle) -> None:
        """End a student process whose exit does not matter, without waiting for it to end."""
        generation, pid = handle
        self._tell({"t": "release", "pid": pid}, generation)

    def _tell(self, request: dict, generation: int | None = None) -> None:
        """A request the worker does not answer (none is awaited: a worker that has died is
        restarted by the next `spawn`); `generation`: only to the worker of that generation."""
        with self.lock:
            if generation is not None and generation != self.generation:
                return
            try:
                _send_json(self.sock, request)
            except (OSError, AttributeError):
                pass

    def reap(self, handle) -> dict:
        """End a student process; what its exit was (`grader.execution.reap`)."""
        generation, pid = handle
        with self.lock:
            if generation != self.generation:
                return {}  # that worker is gone, and its student processes with it
            try:
                _send_json(self.sock, {"t": "reap", "pid": pid})
                self.sock.settimeout(30)
                reply = _recv_json(self.sock)
                self.sock.settimeout(None)
                return reply
            except (EOFError, OSError, ValueError, AttributeError):
                self.restart()
                return {}
