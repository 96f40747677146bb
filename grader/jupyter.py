"""Working in Jupyter: `setup()` puts an exercise's tensors in the notebook, `check()` grades the
cells you have run, `hint("dX")` explains one gradient.

`check()` grades the source of the cells the kernel has run (IPython's input history,
`In`), exactly as `grade` grades a saved notebook: the same exercise blocks, the same
engine in a separate student process, line by line with every line fed the reference
upstream gradient, the same statuses, hints and first step, and the same `cell N, line M`
locations (a cell is numbered by its execution count, the `[N]` Jupyter shows beside it).
A cell run twice counts as it was last run. The result shows as an HTML table in Jupyter
and as the text table elsewhere.
"""

from __future__ import annotations

import re
import sys

from grader.compare import FileResult
from grader.exercises import BY_ID

MARK = "__backprop_ninja__"


def _caller_namespace(depth: int = 2) -> dict:
    return sys._getframe(depth).f_globals


def setup(exercise: str = "ex1", namespace: dict | None = None) -> str:
    """Run the reference forward pass of an exercise and put its tensors, sizes, `torch` and `F`
    in the notebook (or `namespace`). Returns a one-line summary."""
    import torch
    import torch.nn.functional as F

    from grader.grading import first_reference

    if exercise not in BY_ID:
        raise ValueError(f"there is no exercise {exercise!r}; choose one of {', '.join(BY_ID)}")
    chosen = BY_ID[exercise]
    ns = namespace if namespace is not None else _caller_namespace()
    ref = first_reference(chosen)
    ns.update(torch=torch, F=F)
    ns.update(ref.scope(chosen.scope))
    for name in chosen.given:
        ns[name] = ref.gradients[name[1:]].clone()
    ns[MARK] = chosen.id
    loss = ref.tensors["loss"].item()
    return f"{chosen.title}: the forward pass has run (loss {loss:.4f}); {len(chosen.targets)} gradients to write"


class CheckResult:
    """What `check()` found: one `FileResult` per exercise, shown as HTML in Jupyter and as text elsewhere."""

    def __init__(self, results: list[FileResult], message: str | None = None):
        self.files = results
        self.message = message

    @property
    def results(self):
        """Every gradient's verdict, exercise after exercise."""
        return [r for result in self.files for r in result.results]

    @property
    def passed(self) -> bool:
        return bool(self.files) and all(result.passed for result in self.files)

    def to_dict(self) -> list[dict]:
        return [result.to_dict() for result in self.files]

    def __repr__(self) -> str:
        from grader.reports import text_report

        if not self.files:
            return self.message or "check(): nothing to grade"
        return "\n\n".join(text_report(result) for result in self.files)

    def _repr_html_(self) -> str:
        from html import escape

        from grader.picture import CSS, section

        if not self.files:
            return f"<p>{escape(self.message or 'check(): nothing to grade')}</p>"
        # The same drawing and table as `grade --html`, with the style of the report's own classes.
        return f"<style>{CSS}</style>" + "".join(section(result, BY_ID[result.exercise]) for result in self.files
                                                if result.exercise in BY_ID)


def history_cells(namespace: dict) -> list[tuple[int, str]] | None:
    """(execution count, source) of every cell the kernel has run, from IPython's `In`; None outside IPython."""
    history = namespace.get("In", namespace.get("_ih"))
    if not isinstance(history, list):
        try:
            from IPython import get_ipython
        except ImportError:
            return None
        shell = get_ipython()
        history = getattr(getattr(shell, "history_manager", None), "input_hist_raw", None) if shell else None
        if not isinstance(history, list):
            return None
    return [(count, source) for count, source in enumerate(history) if count and isinstance(source, str)
            and source.strip()]


def check(namespace: dict | None = None, *, names: dict[str, str] | str | None = None, exercise: str | None = None,
          timeout: float | None = None) -> CheckResult:
    """Grade the gradient cells this notebook has run, as `grade` grades the saved notebook.

    `names` maps the notebook's own names to the lecture's: {"d_log_probs": "dlogprobs"}
    or "d_log_probs=dlogprobs,..."; `exercise` grades only that one (after `setup("exN")`, that one).
    """
    from grader.compare import Settings
    from grader.execution import DEFAULT_TIMEOUT, SubmissionError
    from grader.grading import grade_loaded, loaded_from_cells
    from grader.notebooks import cells_of, parse_names

    ns = namespace if namespace is not None else _caller_namespace()
    mapping = parse_names(names) if isinstance(names, str) else dict(names or {})
    from_setup = ns.get(MARK) if ns.get(MARK) in BY_ID else None
    chosen = exercise or from_setup
    if chosen is not None and chosen not in BY_ID:
        return CheckResult([], f"check(): there is no exercise {chosen!r}; choose one of {', '.join(BY_ID)}")
    history = history_cells(ns)
    if history is None:
        return CheckResult([], "check() grades the cells you have run in Jupyter, Colab or IPython; "
                               "in a terminal, save the notebook and run `grade NOTEBOOK`")
    cells = cells_of(history, mapping)
    try:
        # After setup("exN"), the kit's own notebook: its gradient cells are that exercise's, whatever they look like.
        loads = loaded_from_cells(cells, what="the cells you have run", exercise=chosen, plural=True,
                                  forced=from_setup if exercise is None else None)
    except SubmissionError as exc:
        why = re.sub(r"--names (\S+)", r'check(names="\1")', str(exc))
        return CheckResult([], f"check(): {why}; run your gradient cells, then check() again")
    results = []
    for loaded in loads:
        try:
            results.append(grade_loaded(loaded, filename="the cells you have run",
                                        timeout=timeout or DEFAULT_TIMEOUT, settings=Settings()))
        except SubmissionError as exc:
            return CheckResult(results, f"check(): {exc}")
    return CheckResult(results)



class Hint:
    """One gradient's long hint, as text and as HTML."""

    def __init__(self, name: str, short: str, long: str):
        self.name, self.short, self.long = name, short, long

    def __repr__(self) -> str:
        return f"{self.name}: {self.short}\n\n{self.long}"

    def _repr_html_(self) -> str:
        from html import escape

        paragraphs = "".join(f"<p>{escape(p)}</p>" for p in self.long.split("\n\n"))
        return f"<div><p><b><code>{escape(self.name)}</code></b>: {escape(self.short)}</p>{paragraphs}</div>"


def hint(name: str, exercise: str | None = None) -> Hint:
    """`hint("dbnvar")`: the forward line, the local derivative and the usual mistakes for one gradient;
    `hint("dlogits", exercise="ex2")`: in the words of the exercise that asks for it in one go."""
    from grader.exercises import EXERCISES
    from grader.hints import hint_for

    asked = name
    name = name if name.startswith("d") else "d" + name
    found = hint_for(name, exercise)
    if found is None:
        names = sorted({t for exercise in EXERCISES for t in exercise.targets})
        raise ValueError(f"there is no hint for {asked!r}; ask for one of {', '.join(names)}")
    return Hint(name, found.short, found.long)
