"""Render results: the per-tensor table and JSON. Pure functions of the result objects."""

from __future__ import annotations

import json

import click

from grader.compare import RTOL, ATOL, FileResult, Status

COLOURS = {
    Status.EXACT: "green",
    Status.APPROX: "cyan",
    Status.FAIL: "red",
    Status.BLANK: "bright_black",
    Status.MISSING: "yellow",
    Status.ERROR: "magenta",
}


def _maxdiff(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.1e}"


def summary_line(result: FileResult) -> str:
    """`22/26 passing: 20 exact, 2 approx · 1 fail · 3 blank`."""
    counts = {status: 0 for status in Status}
    for r in result.results:
        counts[r.status] += 1
    passing = counts[Status.EXACT] + counts[Status.APPROX]
    parts = [f"{passing}/{len(result.results)} passing: {counts[Status.EXACT]} exact, {counts[Status.APPROX]} approx"]
    parts += [f"{counts[s]} {s.value}" for s in (Status.FAIL, Status.BLANK, Status.MISSING, Status.ERROR) if counts[s]]
    return " · ".join(parts)


def text_report(result: FileResult, *, color: bool = False) -> str:
    """The table a student reads: one row per gradient in backward order, hints beneath."""

    def style(text: str, **kwargs) -> str:
        return click.style(text, **kwargs) if color else text

    title = f"{result.file}" + (f" · {result.exercise}" if result.exercise else "")
    out = [style(title, bold=True)]
    if result.error:
        out.append(style(f"error: {result.error}", fg="magenta", bold=True))
    width = max([len(r.name) for r in result.results] + [4])
    out.append(f"  {'name'.ljust(width)}  {'status':7}  {'maxdiff':>7}  line")
    for r in result.results:
        status = style(r.status.value.ljust(7), fg=COLOURS[r.status], bold=r.status is Status.FAIL)
        line = str(r.line) if r.line is not None else ""
        out.append(f"  {r.name.ljust(width)}  {status}  {_maxdiff(r.maxdiff):>7}  {line}".rstrip())
        if r.hint and not (result.error and r.hint.startswith("not graded")):
            out.append(f"  {' ' * width}  ↳ {r.hint}")
    out.append(summary_line(result))
    if any(r.status is Status.APPROX for r in result.results):
        out.append(
            f"approx passes: within rtol {RTOL:g}, atol {ATOL:g} of autograd; the difference is floating-point rounding."
        )
    for note in result.notes:
        out.append(f"note: {note} (assigns no gradient)")
    if result.output:
        out.append("your code printed:")
        out.extend("  | " + line for line in result.output.rstrip("\n").splitlines())
    return "\n".join(out)


def json_report(results: list[FileResult]) -> str:
    """The SPEC's JSON: one object for one file, a list for several."""
    data = [r.to_dict() for r in results]
    return json.dumps(data[0] if len(data) == 1 else data, indent=2)
