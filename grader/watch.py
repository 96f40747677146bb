"""`grade --watch`: grade again whenever a watched file is saved, in one warm process.

The process imports torch and computes the references once, so a re-grade costs only
the grading. Saves are noticed through inotify on Linux, by polling elsewhere (or
when inotify is not available), and graded as soon as the writer is done with
the file (it closed it, or renamed a new copy over it): an editor that writes a file in
several steps causes one re-grade, and no fixed delay is added to the others.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import sys
import time
from pathlib import Path

IN_MODIFY, IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x80, 0x100
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class Changes:
    """Waits for a change to any watched file: inotify when the kernel offers it, polling otherwise."""

    def __init__(self, files: list[Path], directories: list[Path], interval: float = 0.1):
        self.files, self.directories, self.interval = files, directories, interval
        self.fd = self._inotify([str(d) for d in directories])
        self.state = self.snapshot()

    @staticmethod
    def _inotify(directories: list[str]) -> int | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return None
            mask = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
            for directory in directories:
                if libc.inotify_add_watch(fd, directory.encode(), mask) < 0:
                    os.close(fd)
                    return None
            return fd
        except (OSError, AttributeError):
            return None

    @property
    def mechanism(self) -> str:
        return "inotify" if self.fd is not None else f"polling every {self.interval:g} s"

    def snapshot(self) -> dict:
        paths = set(self.files)
        for directory in self.directories:
            paths |= {p for p in directory.glob("*") if p.suffix in (".py", ".ipynb")}
        state = {}
        for path in paths:
            try:
                info = path.stat()
                state[path] = (info.st_mtime_ns, info.st_size)
            except OSError:
                state[path] = None
        return state

    def _read_events(self) -> list[tuple[int, str]]:
        """The inotify events waiting now, as (mask, file name)."""
        data = b""
        try:
            while chunk := os.read(self.fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        events, offset = [], 0
        while offset + EVENT.size <= len(data):
            _, mask, _, length = EVENT.unpack_from(data, offset)
            name = data[offset + EVENT.size: offset + EVENT.size + length].split(b"\0", 1)[0]
            events.append((mask, os.fsdecode(name)))
            offset += EVENT.size + length
        return events

    def _watched(self, name: str) -> bool:
        if self.files:
            return any(path.name == name for path in self.files)
        return name.endswith((".py", ".ipynb"))

    def _wait_for_events(self, timeout: float) -> list[tuple[int, str]]:
        """The events for watched files within `timeout` (polling: none, after one interval)."""
        if self.fd is None:
            time.sleep(min(timeout, self.interval))
            return []
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return [event for event in self._read_events() if self._watched(event[1])] if ready else []

    def wait(self, quiet: float = 0.05) -> None:
        """Return once a watched file has changed and its writer is done with it.

        With inotify, a writer is done when it closes the file, or renames a new copy over it
        (as most editors save): the grade starts at once. A writer that keeps the file open is
        done once the file has had no event for `quiet` seconds. Polling cannot see a close, so
        there the file must stay the same for `quiet` seconds."""
        last = 0
        while True:
            events = self._wait_for_events(1.0 if self.fd is not None else self.interval)
            last = events[-1][0] if events else last
            current = self.snapshot()
            if current != self.state:
                break
        if self.fd is None:
            while True:
                time.sleep(quiet)
                settled = self.snapshot()
                if settled == current:
                    break
                current = settled
        else:
            while not last & (IN_CLOSE_WRITE | IN_MOVED_TO):
                events = self._wait_for_events(quiet)
                if not events:
                    break  # quiet: the writer has stopped, even without closing the file
                last = events[-1][0]
        self.state = self.snapshot()


def watch(*, paths: list[Path], directory: Path, exercise, timeout, settings, names, echo, clear=None) -> None:
    """Grade, print, wait for a save, and again, until Ctrl-C."""
    from grader.execution import SubmissionError
    from grader.grading import grade_path, overview
    from grader.reports import overview_report, text_report, use_color

    if not paths and not directory.is_dir():
        from grader.cli import BadInput

        raise BadInput(f"there is no folder {directory}: pass the file to watch, or --dir PATH")
    tty = sys.stdout.isatty() if clear is None else clear
    color = use_color() if clear is None else clear
    files = [p.resolve() for p in paths]
    changes = Changes(files, sorted({p.parent for p in files}) if files else [directory.resolve()])
    what = ", ".join(str(p) for p in paths) if paths else f"{directory}/"
    try:
        while True:
            started = time.perf_counter()
            if paths:
                parts = []
                for path in paths:
                    try:
                        parts.extend(text_report(result, color=color) for result in grade_path(
                            path=path, exercise=exercise, timeout=timeout, settings=settings, names=names))
                    except SubmissionError as exc:
                        parts.append(f"{path}: {exc}")
                text = "\n\n".join(parts)
            else:
                text = overview_report(overview(directory=directory, timeout=timeout, settings=settings), color=color)
            elapsed = (time.perf_counter() - started) * 1000
            if tty:
                echo("\033[2J\033[H", nl=False)
            echo(text)
            echo(f"\n[watching {what} ({changes.mechanism}) · graded in {elapsed:.0f} ms · Ctrl-C to stop]")
            sys.stdout.flush()
            changes.wait()
    except KeyboardInterrupt:
        echo("\nstopped watching.")
