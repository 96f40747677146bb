"""Hint quality: the grader flags, locates and explains realistic one-line mistakes.

The suite (`mutants.py`) changes one statement of a solution at a time with one operator
(a transpose, a sign, a factor, a swapped tensor, ...). The fast tests check the suite
itself; the slow ones grade all of it once (about half a minute with two processes, as
`bench/bench_hints.py` does) and assert one figure each, so a report shows which target
is missed: flagged 100%, at the statement >= 98%, right hint >= 90%, no collateral
failures, every correct rewrite passing.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

import mutants
from grader.exercises import BY_ID

ROOT = Path(__file__).resolve().parent.parent
SHOWN = 10  # examples quoted in a failure message


def bench():
    """`bench/bench_hints.py` as a module (it is a script, not part of a package)."""
    if "bench_hints" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_hints", ROOT / "bench" / "bench_hints.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_hints"] = module  # the worker processes find `grade_job` by this name
        spec.loader.exec_module(module)
    return sys.modules["bench_hints"]


@pytest.fixture(scope="module")
def suite() -> mutants.Suite:
    return mutants.build_suite()


def base_of(mutant: mutants.Mutant, suite: mutants.Suite) -> str:
    if mutant.variant == "solution":
        return mutants.solution(BY_ID[mutant.exercise])
    return next(v.source for v in suite.variants if v.exercise == mutant.exercise and v.name == mutant.variant)


# --- the suite itself (fast) ---


def test_every_operator_produced_a_mutant(suite):
    counts = Counter(m.operator for m in suite.mutants)
    assert not [op for op in mutants.OPERATORS if counts[op] == 0], counts


def test_the_suite_has_a_few_hundred_mutants(suite):
    assert 300 <= len(suite.mutants) <= 500


def test_no_mutant_equals_its_source_and_each_changes_one_statement(suite):
    for mutant in suite.mutants:
        base = base_of(mutant, suite)
        assert mutant.source != base, mutant.key
        before, after = base.splitlines(), mutant.source.splitlines()
        assert len(before) == len(after), mutant.key
        changed = [i + 1 for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert changed == [mutant.line], mutant.key
        original = next(node for node in ast.parse(base).body if node.lineno == mutant.line)
        mutated = next(node for node in ast.parse(mutant.source).body if node.lineno == mutant.line)
        assert ast.dump(original) != ast.dump(mutated), mutant.key


def test_at_most_cap_mutants_per_operator_per_statement(suite):
    counts = Counter((m.exercise, m.variant, m.line, m.operator) for m in suite.mutants)
    assert max(counts.values()) <= mutants.CAP


def test_equivalent_mutants_were_left_out(suite):
    dropped = {m.statement for m in suite.equivalent}
    # The argmax of the logits is the argmax of the probabilities: no grader can tell these apart.
    assert ("dlogits = dnorm_logits + F.one_hot(probs.max(1).indices, num_classes=vocab_size) * dlogit_maxes"
            in dropped)
    assert not dropped & {m.statement for m in suite.mutants}


def test_every_kept_mutant_computes_something_else(suite):
    for mutant in suite.mutants:
        exercise = BY_ID[mutant.exercise]
        base = base_of(mutant, suite)
        lines = tuple(node.lineno for node in ast.parse(base).body if mutant.target in mutants.assigned_in(node))
        original = mutants.statements_at(base, lines)
        mutated = mutants.statements_at(mutant.source, lines)
        assert not mutants.equivalent(exercise, original, mutated, mutant.target), mutant.key


def test_keyword_rules_are_the_operators(suite):
    for mutant in suite.mutants:
        if mutant.operator == "tensor_swap":
            assert mutant.mode == "all" and len(mutant.keywords) == 2, mutant.key
            assert all(word in mutant.description.lower() for word in mutant.keywords), mutant.key
        else:
            assert mutant.rule == mutants.KEYWORDS[mutant.operator], mutant.key
        assert all(word == word.lower() for word in mutant.keywords), mutant.key


def test_hint_matching():
    assert mutants.hint_matches(("any", ("sign",)), "`dh` has the opposite Sign")
    assert not mutants.hint_matches(("any", ("dim",)), None)
    assert not mutants.hint_matches(("any", ("dim",)), "   ")
    assert mutants.hint_matches(("all", ("`counts`", "`probs`")), "uses `counts` where `probs` belongs")
    assert not mutants.hint_matches(("all", ("`counts`", "`probs`")), "uses `counts`")


def test_splits_compute_the_solutions_gradient(suite):
    assert [(v.exercise, v.target) for v in suite.variants] == [
        ("ex1", "dcounts"), ("ex1", "dlogits"), ("ex1", "dbndiff"), ("ex1", "dhprebn"), ("ex2", "dlogits")]
    for variant in suite.variants:
        exercise = BY_ID[variant.exercise]
        statements = mutants.statements_at(variant.source, variant.lines)
        assert len(statements) >= 2, variant.name
        for i, ref in enumerate(mutants.references(exercise.id)):
            got = mutants.evaluate(exercise, statements, variant.target, config_index=i, random_upstream=False)
            assert mutants.close(ref.gradients[exercise.tensor_of(variant.target)], got), variant.name


def test_rewrites_are_right_and_different(suite):
    assert 30 <= len(suite.rewrites) <= 45
    for rewrite in suite.rewrites:
        assert rewrite.source != mutants.solution(BY_ID[rewrite.exercise])
        assert mutants.rewrite_is_right(rewrite), (rewrite.target, rewrite.description)


# --- the grader on the suite (slow: grades every source once) ---


@pytest.fixture(scope="module")
def report():
    # In this process, one submission after another: a pool forked from a test process would share
    # the student-process worker that earlier tests started.
    return bench().run(workers=1)


def examples(records, why) -> str:
    shown = [f"\n  [{r['operator']}] {r['exercise']} {r['variant']} line {r['expected_line']}: {r['statement']}"
             f"\n    {r['status']} at line {r['line']}: {r['hint']}" for r in records[:SHOWN]]
    return f"{len(records)} {why}:" + "".join(shown)


@pytest.mark.slow
def test_the_unmutated_sources_pass(report):
    assert report["baselines_passing"] == 1.0, report["failing_baselines"]


@pytest.mark.slow
def test_every_mutant_is_flagged(report):
    missed = [r for r in report["records"] if not r["flagged"]]
    assert report["flagged"] == 1.0, examples(missed, "mutants pass")


@pytest.mark.slow
def test_flagged_mutants_are_reported_at_the_mutated_statement(report):
    wrong = [r for r in report["records"] if r["flagged"] and not r["at_statement"]]
    assert report["at_statement"] >= 0.98, f"{report['at_statement']:.1%}: " + examples(wrong, "reported elsewhere")


@pytest.mark.slow
def test_flagged_mutants_have_a_hint_that_names_the_mistake(report):
    wrong = [r for r in report["records"] if r["flagged"] and not r["right_hint"]]
    assert report["right_hint"] >= 0.90, f"{report['right_hint']:.1%}: " + examples(wrong, "hints miss the mistake")


@pytest.mark.slow
def test_a_mutant_fails_only_its_own_gradient(report):
    assert report["collateral"] == 0, report["collateral_mutants"][:SHOWN]


@pytest.mark.slow
def test_correct_rewrites_pass(report):
    assert report["rewrites_passing"] == 1.0, report["failing_rewrites"]
