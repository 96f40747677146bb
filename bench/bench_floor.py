"""The floor under batch grading: what one process per submission costs here with no grading at all.

    python bench/bench_floor.py [--count 600]

`grade batch` runs each submission in a process of its own, forked from a warm worker
that has imported torch and computed the forward passes. This bench does only that
part, as cheaply as it can be done: two loops side by side (one per core), each
forking a process per submission from a warm process; the process runs the
solution's lines at the three sizes, unguarded, and writes the 26 answers of each
size back as raw bytes; the parent compares them with the reference gradients
(`torch.equal`). No sandbox, no policy guard, no teacher forcing, no probes, no
chained run, no diagnosis, no reports: whatever a grader adds costs more.

It prints the rate with the warm process in 4 KB pages and in 2 MB pages (as the
batch workers keep it), and what that floor leaves of the batch targets' time budget.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"with looping files": 60, "without": 100}  # submissions a second, 1,000 of them, 2 cores


def floor_rate(count: int, huge: bool) -> float:
    """Submissions a second through a bare fork-run-compare loop, two loops at once."""
    import torch
    import torch.nn.functional as F

    from grader.exercises import EX1
    from grader.network import reference
    from grader.sandbox import use_huge_pages

    torch.set_num_threads(1)
    code = compile((ROOT / "solutions" / "ex1_backprop_all.py").read_text(), "ex1_backprop_all.py", "exec")
    refs = [reference(config) for config in EX1.configs]
    scopes = [{**ref.tensors, **ref.sizes, "torch": torch, "F": F} for ref in refs]
    expected = [[ref.gradients[EX1.tensor_of(t)] for t in EX1.targets] for ref in refs]
    gc.freeze()
    if huge:
        use_huge_pages()

    def one() -> bool:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read_fd)
                data = bytearray()
                for scope in scopes:
                    namespace = dict(scope)
                    exec(code, namespace)
                    for target in EX1.targets:
                        data += namespace[target].contiguous().numpy().tobytes()
                view = memoryview(data)
                while view:
                    view = view[os.write(write_fd, view):]
            finally:
                os._exit(0)
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 1 << 20):
            chunks.append(chunk)
        os.close(read_fd)
        os.waitpid(pid, 0)
        data, offset, right = b"".join(chunks), 0, True
        for wanted in expected:
            for tensor in wanted:
                size = tensor.numel() * tensor.element_size()
                got = torch.frombuffer(bytearray(data[offset:offset + size]), dtype=tensor.dtype).view(tensor.shape)
                right &= torch.equal(got, tensor) or torch.allclose(got, tensor, atol=1e-6)  # (true zeros)
                offset += size
        return right

    if not one():
        sys.exit("the solution's answers do not match the references: the floor measures nothing")
    start = time.perf_counter()
    loops = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            ok = all(one() for _ in range(count // 2))
            os._exit(0 if ok else 1)
        loops.append(pid)
    failed = any(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in loops)
    if failed:
        sys.exit("a submission's answers came back wrong")
    return count // 2 * 2 / (time.perf_counter() - start)


def measure(count: int, huge: bool) -> float:
    """`floor_rate` in a fresh process of its own (a warm process is set up once, like a worker)."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--count", str(count), "--child", "huge" if huge else "small"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--child", choices=["huge", "small"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(floor_rate(args.count, args.child == "huge"))
        os._exit(0)
    rates = {huge: measure(args.count, huge) for huge in (False, True)}
    print(f"{args.count} submissions, a process each, two at a time on {os.cpu_count()} cores, no grading:")
    print(f"  4 KB pages: {rates[False]:.0f} submissions/s; 2 MB pages (as the batch workers): {rates[True]:.0f}/s")
    floor_ms = 1000 / rates[True]
    for label, target in TARGETS.items():
        print(f"  target {target}/s ({label}): {1000 / target:.1f} ms a submission, of which the floor takes "
              f"{floor_ms:.1f} ms; {1000 / target - floor_ms:.1f} ms left for starting up, grading and reports")


if __name__ == "__main__":
    main()
