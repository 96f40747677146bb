"""Mutation testing: plant small bugs in the grader, one at a time, and count how many the tests catch.

    pip install mutmut==3.8.1
    python bench/mutation.py                   # every module configured in pyproject.toml
    python bench/mutation.py grader.compare    # one module (a prefix of mutant names)
    python bench/mutation.py --survivors       # also print each surviving mutant's change

mutmut copies the package to ./mutants, changes one operator, constant or call at a time, and runs
the tests named in `[tool.mutmut]` of pyproject.toml against each change. A change no test notices
"survives": either a test is missing, or the change cannot alter behaviour (an equivalent mutant).
The score printed is killed / (killed + survived), per module; ./mutants is kept, so a second run
only grades what changed. The whole run takes a few minutes on two cores: it is not part of CI.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mutmut(*args: str, quiet: bool = False) -> str:
    done = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE if quiet else None, stderr=subprocess.STDOUT if quiet else None)
    if done.returncode != 0:
        sys.exit(f"mutmut {' '.join(args)} failed (exit {done.returncode}); is mutmut 3.8 installed?")
    return done.stdout or ""


def changed_lines(name: str) -> list[str]:
    """The lines a mutant removes and adds, as a diff shows them."""
    shown = mutmut("show", name, quiet=True)
    return [line for line in shown.splitlines() if re.match(r"^[-+](?![-+])", line)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="mutant name prefixes, e.g. grader.compare (default: all)")
    parser.add_argument("--survivors", action="store_true", help="print each surviving mutant's change")
    args = parser.parse_args()
    patterns = [f"{m}*" for m in args.modules]
    mutmut("run", *patterns, quiet=True)
    listing = mutmut("results", "--all", "true", quiet=True)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    survivors = []
    for line in listing.splitlines():
        found = re.match(r"\s*(grader\.(\w+)\.\S+): (.+)$", line)
        if not found or (args.modules and not any(found[1].startswith(m) for m in args.modules)):
            continue
        name, module, status = found[1], found[2], found[3].strip()
        counts[module][status] += 1
        if status == "survived":
            survivors.append(name)
    total = collections.Counter()
    print(f"{'module':<12} {'killed':>7} {'survived':>9} {'other':>6} {'score':>7}")
    for module, count in sorted(counts.items()):
        total.update(count)
        killed, survived = count["killed"], count["survived"]
        other = sum(count.values()) - killed - survived
        score = killed / (killed + survived) if killed + survived else 1.0
        print(f"{module:<12} {killed:>7} {survived:>9} {other:>6} {score:>7.1%}")
    killed, survived = total["killed"], total["survived"]
    if killed + survived:
        print(f"{'all':<12} {killed:>7} {survived:>9} {sum(total.values()) - killed - survived:>6} "
              f"{killed / (killed + survived):>7.1%}")
    if args.survivors:
        for name in survivors:
            print(f"\n{name}")
            for line in changed_lines(name):
                print(f"    {line.strip()[:150]}")


if __name__ == "__main__":
    main()
