"""How well the grader flags, locates and explains realistic one-line mistakes.

    python bench/bench_hints.py [--limit N] [--json PATH] [--show] [--workers 2]

Grades every mutant of `tests/mutants.py` (one statement of a solution changed by one
operator: a transpose, a sign, a factor, a swapped tensor, ...), every correct rewrite
and every unmutated source (the solutions and their splits), and prints:

- flagged: the share of mutants whose mutated gradient does not pass;
- at the statement: of those, the share whose row points at the mutated statement;
- right hint: of those, the share whose hint names the mistake (the operator's keywords);
- collateral: mutants that made some other gradient fail;
- rewrites passing: the share of correct rewrites graded as passing;

with a breakdown per operator. Targets: flagged 100%, at the statement >= 98%, right
hint >= 90%, collateral 0, rewrites 100% (`tests/test_hint_quality.py` asserts them).
`--limit N` grades an evenly spread subset of N mutants and N rewrites; `--show`
prints every mutant that was missed, mislocated or unexplained, with its hint.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

torch.set_num_threads(1)  # before anything forks: tiny tensors, and forked workers stay safe

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

import mutants  # noqa: E402
from grader.exercises import BY_ID  # noqa: E402
from grader.grading import grade_source  # noqa: E402

TARGETS = {"flagged": 1.0, "at_statement": 0.98, "right_hint": 0.90, "collateral": 0, "rewrites_passing": 1.0}


def grade_job(job: tuple[str, str, str]) -> dict:
    """Grade one source; only plain data comes back from a worker."""
    source, filename, exercise_id = job
    # A generous time limit: the figures are about hints, not about a loaded machine.
    result = grade_source(source=source, filename=filename, exercise=BY_ID[exercise_id], timeout=30.0)
    return {
        "error": result.error,
        "rows": {r.name: {"status": r.status.value, "passed": r.status.passed, "line": r.line, "hint": r.hint}
                 for r in result.results},
    }


def grade_all(jobs: list[tuple[str, str, str]], workers: int = 2) -> list[dict]:
    if workers <= 1 or len(jobs) < 2:
        return [grade_job(job) for job in jobs]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_own_executor) as pool:
        return list(pool.map(grade_job, jobs, chunksize=4))


def _own_executor() -> None:
    """In a forked pool process: student processes from a worker of its own, closed when it ends
    (the parent's worker, if it had started one, answers the parent alone)."""
    from multiprocessing.util import Finalize

    from grader.execution import LocalExecutor, use_executor

    executor = LocalExecutor()
    use_executor(executor)
    Finalize(executor, lambda: executor.worker is not None and executor.worker.close(), exitpriority=10)


def spread(items: list, limit: int | None) -> list:
    """`limit` items evenly spread over `items` (all of them without a limit)."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit <= 0:
        return []
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def spread_by_operator(items: list, limit: int | None) -> list:
    """`limit` mutants shared out over the operators as evenly as they allow, each share evenly
    spread over that operator's mutants, in suite order: a small subset still covers every operator."""
    if limit is None or limit >= len(items):
        return list(items)
    groups: dict[str, list] = {}
    for item in items:
        groups.setdefault(item.operator, []).append(item)
    quota = dict.fromkeys(groups, 0)
    left = limit
    while left > 0:
        for operator, group in groups.items():
            if left > 0 and quota[operator] < len(group):
                quota[operator] += 1
                left -= 1
    chosen = {id(item) for operator, group in groups.items() for item in spread(group, quota[operator])}
    return [item for item in items if id(item) in chosen]


def share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def judge(mutant: mutants.Mutant, graded: dict) -> dict:
    """One mutant's record: was it flagged, at the right line, with a hint that names the mistake."""
    row = graded["rows"].get(mutant.target)
    flagged = row is not None and not row["passed"]
    collateral = sorted(name for name, other in graded["rows"].items()
                        if name != mutant.target and not other["passed"])
    return {
        "key": mutant.key,
        "exercise": mutant.exercise,
        "target": mutant.target,
        "operator": mutant.operator,
        "variant": mutant.variant,
        "description": mutant.description,
        "statement": mutant.statement,
        "expected_line": mutant.line,
        "keywords": {"mode": mutant.mode, "words": list(mutant.keywords)},
        "status": row["status"] if row else None,
        "line": row["line"] if row else None,
        "hint": row["hint"] if row else None,
        "file_error": graded["error"],
        "flagged": flagged,
        "at_statement": flagged and row["line"] == mutant.line,
        "right_hint": flagged and mutants.hint_matches(mutant.rule, row["hint"]),
        "collateral": collateral,
    }


def all_pass(graded: dict) -> bool:
    return graded["error"] is None and all(row["passed"] for row in graded["rows"].values())


def run(limit: int | None = None, workers: int = 2) -> dict:
    """Build the suite, grade it, and return every figure and record (JSON-ready)."""
    start = time.perf_counter()
    suite = mutants.build_suite()
    built = time.perf_counter() - start
    chosen = spread_by_operator(suite.mutants, limit)
    rewrites = spread(suite.rewrites, limit)
    variants = suite.baselines
    jobs = ([(m.source, m.filename, m.exercise) for m in chosen]
            + [(r.source, r.filename, r.exercise) for r in rewrites]
            + [(v.source, v.filename, v.exercise) for v in variants])
    graded = grade_all(jobs, workers)
    records = [judge(m, g) for m, g in zip(chosen, graded)]
    rewrite_graded = graded[len(chosen):len(chosen) + len(rewrites)]
    variant_graded = graded[len(chosen) + len(rewrites):]

    flagged = [r for r in records if r["flagged"]]
    by_operator = {}
    equivalent = Counter(m.operator for m in suite.equivalent)
    for operator in mutants.OPERATORS:
        mine = [r for r in records if r["operator"] == operator]
        hit = [r for r in mine if r["flagged"]]
        by_operator[operator] = {
            "mutants": len(mine),
            "equivalent_dropped": equivalent.get(operator, 0),
            "flagged": share(len(hit), len(mine)),
            "at_statement": share(sum(r["at_statement"] for r in hit), len(hit)),
            "right_hint": share(sum(r["right_hint"] for r in hit), len(hit)),
        }
    failing_rewrites = [
        {"exercise": r.exercise, "target": r.target, "description": r.description,
         "error": g["error"],
         "rows": {name: row for name, row in g["rows"].items() if not row["passed"]}}
        for r, g in zip(rewrites, rewrite_graded) if not all_pass(g)
    ]
    failing_variants = [
        {"exercise": v.exercise, "name": v.name, "error": g["error"],
         "rows": {name: row for name, row in g["rows"].items() if not row["passed"]}}
        for v, g in zip(variants, variant_graded) if not all_pass(g)
    ]
    return {
        "mutants": len(records),
        "mutants_in_suite": len(suite.mutants),
        "equivalent_dropped": len(suite.equivalent),
        "unparsable_dropped": suite.unparsable,
        "flagged": share(len(flagged), len(records)),
        "flagged_count": len(flagged),
        "at_statement": share(sum(r["at_statement"] for r in flagged), len(flagged)),
        "right_hint": share(sum(r["right_hint"] for r in flagged), len(flagged)),
        "collateral": sum(bool(r["collateral"]) for r in records),
        "collateral_mutants": [{"key": r["key"], "others": r["collateral"]} for r in records if r["collateral"]],
        "rewrites": len(rewrites),
        "rewrites_passing": share(len(rewrites) - len(failing_rewrites), len(rewrites)),
        "failing_rewrites": failing_rewrites,
        "baselines": len(variants),
        "baselines_passing": share(len(variants) - len(failing_variants), len(variants)),
        "failing_baselines": failing_variants,
        "by_operator": by_operator,
        "seconds_building": built,
        "seconds": time.perf_counter() - start,
        "records": records,
    }


def percent(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def print_report(report: dict, show: bool = False) -> None:
    print(f"{report['mutants']} mutants graded ({report['mutants_in_suite']} in the suite; "
          f"{report['equivalent_dropped']} equivalent and {report['unparsable_dropped']} unparsable dropped)")
    print(f"  flagged           {percent(report['flagged'])}  ({report['flagged_count']}/{report['mutants']}; "
          f"target 100%)")
    print(f"  at the statement  {percent(report['at_statement'])}  (of flagged; target >= 98%)")
    print(f"  right hint        {percent(report['right_hint'])}  (of flagged; target >= 90%)")
    print(f"  collateral        {report['collateral']:6d}  (target 0)")
    print(f"  rewrites passing  {percent(report['rewrites_passing'])}  ({report['rewrites']} rewrites; target 100%)")
    print(f"  unmutated passing {percent(report['baselines_passing'])}  ({report['baselines']} sources: "
          f"the solutions and their splits)")
    print()
    print(f"  {'operator':22} {'mutants':>7} {'equiv':>5} {'flagged':>8} {'at stmt':>8} {'hint':>8}")
    for operator, row in report["by_operator"].items():
        print(f"  {operator:22} {row['mutants']:7d} {row['equivalent_dropped']:5d} {percent(row['flagged']):>8} "
              f"{percent(row['at_statement']):>8} {percent(row['right_hint']):>8}")
    print()
    for item in report["collateral_mutants"]:
        print(f"collateral: {item['key']} -> also failing: {', '.join(item['others'])}")
    for item in report["failing_rewrites"]:
        rows = "; ".join(f"{name} {row['status']}: {row['hint']}" for name, row in item["rows"].items())
        print(f"rewrite not passing: {item['exercise']} {item['target']} ({item['description']}): "
              f"{item['error'] or rows}")
    for item in report["failing_baselines"]:
        rows = "; ".join(f"{name} {row['status']}: {row['hint']}" for name, row in item["rows"].items())
        print(f"unmutated source not passing: {item['exercise']} {item['name']}: {item['error'] or rows}")
    missed = [r for r in report["records"] if not r["flagged"]]
    for r in missed:
        print(f"not flagged: {r['exercise']} line {r['expected_line']} [{r['operator']}] {r['statement']}")
    if show:
        for r in report["records"]:
            if r["flagged"] and not (r["at_statement"] and r["right_hint"]):
                what = []
                if not r["at_statement"]:
                    what.append(f"reported at line {r['line']}, mutated line {r['expected_line']}")
                if not r["right_hint"]:
                    what.append(f"the hint does not hold {r['keywords']['mode']} of {r['keywords']['words']}")
                print(f"\n[{r['operator']}] {r['exercise']} {r['variant']} line {r['expected_line']}: {r['statement']}")
                print(f"  {r['description']}; {'; '.join(what)}")
                print(f"  {r['status']}: {r['hint']}")
    print(f"\ntime: {report['seconds']:.1f} s ({report['seconds_building']:.1f} s building the suite)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="grade an evenly spread subset of N mutants")
    parser.add_argument("--json", metavar="PATH", help="write the figures and every record as JSON")
    parser.add_argument("--show", action="store_true", help="print every mislocated or unexplained mutant")
    parser.add_argument("--workers", type=int, default=2, help="grading processes (default 2)")
    args = parser.parse_args()
    report = run(limit=args.limit, workers=args.workers)
    print_report(report, show=args.show)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
