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
from pathlib import Path

FILE_SIZE_LIMIT = 16 << 20  # bytes a student process may write to one file
MEMORY_HEADROOM = 1 << 30  # address space a student process may add to the warm process's
OPEN_FILES = 64


NOBODY = 65534


def drop_privileges() -> None:
    """In a sandbox run as root: become `nobody`, so the process limit holds (the kernel never
    applies it to root) and the process can neither signal nor trace the worker."""
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def limit_resources(cpu_seconds: float | None) -> None:
    """Resource limits for a student process, set in the child right after the fork."""
    size_kb = 0
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                size_kb = int(line.split()[1])
    except OSError:
        pass
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
        header, fds, _, _ = socket.recv_fds(sock, 4, 1)
        if not header:
            raise EOFError
        header += _recv_exact(sock, 4 - len(header))
        (length,) = struct.unpack(">I", header)
        return json.loads(_recv_exact(sock, length)), fds
    (length,) = struct.unpack(">I", _recv_exact(sock, 4))
    return json.loads(_recv_exact(sock, length))


def serve(fd: int) -> None:
    """A worker's loop: fork a student process per request, pass its pipe back, reap on request."""
    import numpy  # noqa: F401 - imported here, once: its thread pool cannot start after the process limit
    import torch

    torch.set_num_threads(1)  # before any op: forking stays safe
    from grader import diagnose, training  # noqa: F401 - imported once here, not in every fork
    from grader.execution import fork_child, reap, run_job, warm_job

    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: student processes cannot ptrace us
    except (OSError, AttributeError):
        pass
    sock = socket.socket(fileno=fd)
    sandboxed = os.environ.get("GRADER_SANDBOX") == "bwrap"
    base = tempfile.mkdtemp(prefix="grade-")
    workdirs: dict[int, str] = {}
    while True:
        try:
            request = _recv_json(sock)
        except (EOFError, OSError):
            os._exit(0)
        if request.get("t") == "spawn":
            workdir = tempfile.mkdtemp(dir=base)
            job, args, timeout = request["job"], request["args"], request.get("timeout")
            os.chmod(workdir, 0o777)
            warm_job(job, args)  # references are computed here once, then shared by every fork
            pid, read_fd = fork_child(lambda w, output: run_job(job, args, w, output),
                                      cpu_seconds=timeout, workdir=workdir, drop_root=sandboxed and os.getuid() == 0)
            workdirs[pid] = workdir
            _send_json(sock, {"t": "spawned", "pid": pid}, [read_fd])
            os.close(read_fd)
        elif request.get("t") == "reap":
            pid = int(request["pid"])
            reap(pid)
            shutil.rmtree(workdirs.pop(pid, ""), ignore_errors=True)
            _send_json(sock, {"t": "reaped"})


# --- the grader side ---


def bwrap_path() -> str | None:
    """bubblewrap's path when it is installed and can make a sandbox here."""
    path = shutil.which("bwrap")
    if not path:
        return None
    probe = subprocess.run([path, *_bwrap_options(), "true"], capture_output=True, timeout=30)
    return path if probe.returncode == 0 else None


def _readable_paths() -> list[str]:
    """What a worker must see, read-only: the system, the Python installation, the grader and its data."""
    import grader
    from grader.network import default_words_path

    package = str(Path(grader.__file__).resolve().parent)
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
    options, made = ["--tmpfs", "/tmp"], set()
    paths = _readable_paths()
    for link in ("/bin", "/sbin", "/lib", "/lib64", "/lib32"):
        if os.path.islink(link):  # merged /usr: the loader is found through these links
            options += ["--symlink", os.readlink(link), link]
            made.add(link)
    for path in paths:
        # Parents bwrap would otherwise create root-only: `nobody` must be able to walk through them.
        for parent in reversed(Path(path).parents):
            if str(parent) != "/" and str(parent) not in made and str(parent) not in paths:
                made.add(str(parent))
                options += ["--perms", "0755", "--dir", str(parent)]
        options += ["--ro-bind", path, path]
    if os.getuid() == 0:
        # As root, keep only what the worker needs to make each student process `nobody` and to end it.
        privileges = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_KILL"]
    else:
        privileges = ["--unshare-user", "--cap-drop", "ALL"]
    return options + privileges + [
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/sandbox", "--chdir", "/sandbox",
        "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--clearenv", "--setenv", "HOME", "/sandbox",
        "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "OMP_NUM_THREADS", "1", "--setenv", "OPENBLAS_NUM_THREADS", "1",
        "--setenv", "GRADER_SANDBOX", "bwrap",
    ]


class Worker:
    """One warm worker process, with or without a bubblewrap sandbox, driven over a Unix socket.

    Several grading threads may share a worker: each request and its answer happen under a
    lock, and the student processes themselves run side by side."""

    def __init__(self, bwrap: str | None):
        self.bwrap = bwrap
        self.process = None
        self.sock = None
        self.lock = threading.Lock()
        self.generation = 0  # a restart makes the old worker's student processes someone else's
        self.start()

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        code = f"from grader.sandbox import serve; serve({theirs.fileno()})"
        command = [sys.executable, "-c", code]
        if self.bwrap:
            command = [self.bwrap, *_bwrap_options(), *command]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.process = subprocess.Popen(command, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
        theirs.close()
        self.sock = ours
        self.generation += 1

    def restart(self) -> None:
        self.close()
        self.start()

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()

    # The executor interface of `grader.execution`.

    def spawn(self, job: str, args: dict, timeout: float | None) -> tuple[object, int]:
        from grader.execution import WorkerDied

        with self.lock:
            try:
                _send_json(self.sock, {"t": "spawn", "job": job, "args": args, "timeout": timeout})
                self.sock.settimeout(120)  # the worker imports torch once, the first time
                reply, fds = _recv_json(self.sock, with_fds=True)
                self.sock.settimeout(None)
            except (EOFError, OSError, ValueError):
                self.restart()
                raise WorkerDied("the grading worker stopped; this submission was not graded") from None
            if reply.get("t") != "spawned" or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                self.restart()
                raise WorkerDied("the grading worker answered nonsense; this submission was not graded")
            return (self.generation, int(reply["pid"])), fds[0]

    def reap(self, handle) -> None:
        generation, pid = handle
        with self.lock:
            if generation != self.generation:
                return  # that worker is gone, and its student processes with it
            try:
                _send_json(self.sock, {"t": "reap", "pid": pid})
                self.sock.settimeout(30)
                _recv_json(self.sock)
                self.sock.settimeout(None)
            except (EOFError, OSError, ValueError):
                self.restart()
