"""Render results: the per-tensor table and JSON. Pure functions of the result objects."""

from __future__ import annotations

import json
import re

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


# Terminal escape sequences, 7- and 8-bit, then the control characters left over, and lone
# surrogates (from file names that are not UTF-8, unwritable as UTF-8).
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI: colours, cursor moves, clearing the screen
    r"|(?:\x1b\]|\x9d)[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"  # OSC: window titles, hyperlinks
    r"|\x1b[ -/]*[0-~]?"  # any other escape (`ESC c` resets the terminal, `ESC ( 0` draws lines)
)
# All but \t and \n; and the direction overrides and isolates, which reorder the text after them
# (a name could turn the names beside it around).
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def printable(text: str, *, multiline: bool = False) -> str:
    """Text from a student (printed output, a file or folder name) made safe for a terminal or a text
    file: without escape sequences or control characters, which could clear the screen, move the
    cursor or fake a verdict. `multiline` keeps newlines and tabs; otherwise they become spaces."""
    text = _SURROGATES.sub("\ufffd", _CONTROLS.sub("", _ESCAPES.sub("", text)))
    return text if multiline else text.replace("\n", " ").replace("\t", " ")


def use_color(stream=None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set."""
    import os
    import sys

    return (stream or sys.stdout).isatty() and "NO_COLOR" not in os.environ


def _maxdiff(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    return f"{value:.1e}"


def first_to_fix(result: FileResult):
    """The row a student should fix first: the first failing or crashing line, else the first blank."""
    for wanted in ((Status.FAIL, Status.ERROR), (Status.BLANK, Status.MISSING)):
        rows = [r for r in result.results if r.status in wanted]
        if rows:
            return min(rows, key=lambda r: r.line if r.line is not None else float("inf"))
    return None


def where(r) -> str:
    """`cell 4, line 3` in a notebook, `line 3` in a file, "" when the gradient has no line."""
    if r.line is None:
        return ""
    return f"cell {r.cell}, line {r.line}" if r.cell else f"line {r.line}"


def ask_grade(name: str, exercise: str | None) -> str:
    """How to ask for a long hint on the command line."""
    return f"grade hint {name}" + (f" --exercise {exercise}" if exercise else "")


def ask_jupyter(name: str, exercise: str | None) -> str:
    """How to ask for a long hint in Jupyter."""
    return f'hint("{name}"' + (f', exercise="{exercise}"' if exercise else "") + ")"


def start_with(result: FileResult, *, code=lambda text: f"`{text}`", ask=ask_grade) -> str | None:
    """`start with `dbnvar`, cell 4, line 3 · `grade hint dbnvar` explains it`, or None when all pass.
    `ask(name, exercise)`: how to ask for the long hint (`ask_jupyter` in Jupyter); the exercise is
    named when it has words of its own for that gradient."""
    start = first_to_fix(result)
    if start is None:
        return None
    place = where(start)
    from grader.hints import BY_EXERCISE

    own = result.exercise if start.name in BY_EXERCISE.get(result.exercise or "", {}) else None
    return f"start with {code(start.name)}" + (f", {place}" if place else "") + (
        f" · {code(ask(start.name, own))} explains it" if start.about else "")


def summary_line(result: FileResult) -> str:
    """`22/26 passing: 20 exact, 2 approx · 1 fail · 3 blank`."""
    counts = {status: 0 for status in Status}
    for r in result.results:
        counts[r.status] += 1
    parts = [f"{result.passing}/{result.checks} passing: {counts[Status.EXACT]} exact, {counts[Status.APPROX]} approx"]
    parts += [f"{counts[s]} {s.value}" for s in (Status.FAIL, Status.BLANK, Status.MISSING, Status.ERROR) if counts[s]]
    if result.training is not None:
        parts.append("training run " + ("passes" if result.training.passed else "fails"))
    return " · ".join(parts)


def text_report(result: FileResult, *, color: bool = False) -> str:
    """The table a student reads: one row per gradient in backward order, hints beneath."""

    def style(text: str, **kwargs) -> str:
        return click.style(text, **kwargs) if color else text

    # The file name, error, hints and notes can carry a student's text (a name, an exception's message).
    title = printable(result.file) + (f" · {result.exercise}" if result.exercise else "")
    out = [style(title, bold=True)]
    if result.error:
        out.append(style(f"error: {printable(result.error)}", fg="magenta", bold=True))
    if not result.parses:  # nothing ran: one sentence, not one copy of it per gradient
        out.append("nothing is graded until the file parses")
        return "\n".join(out)
    width = max([len(r.name) for r in result.results] + [4])
    out.append(f"  {'name'.ljust(width)}  {'status':7}  {'maxdiff':>7}  "
               + ("cell:line" if any(r.cell for r in result.results) else "line"))
    for r in result.results:
        status = style(r.status.value.ljust(7), fg=COLOURS[r.status], bold=r.status is Status.FAIL)
        line = (f"{r.cell}:{r.line}" if r.cell else str(r.line)) if r.line is not None else ""
        out.append(f"  {r.name.ljust(width)}  {status}  {_maxdiff(r.maxdiff):>7}  {line}".rstrip())
        if r.hint:
            out.append(f"  {' ' * width}  ↳ {printable(r.hint)}")
        if r.about:
            out.append(f"  {' ' * width}    {style('about: ' + r.about, dim=True)}")
        if r.warning:
            out.append(f"  {' ' * width}  {style('! ' + printable(r.warning), fg='yellow')}")
    if result.training is not None:
        out.append(style(result.training.describe(), fg="green" if result.training.passed else "red"))
    out.append(summary_line(result))
    start = start_with(result)
    if start:
        out.append(start)
    if result.names:
        out.append(f"your names look like renamings of the lecture's: grade again with --names {printable(result.names)}")
    if any(r.status is Status.APPROX for r in result.results):
        out.append(
            f"approx passes: within rtol {RTOL:g}, atol {ATOL:g} of autograd; the difference is floating-point rounding."
        )
    for note in result.notes:
        out.append(f"note: {printable(note)}")
    if result.output:
        out.append("your code printed:")
        out.extend("  | " + line for line in printable(result.output, multiline=True).rstrip("\n").splitlines())
    return "\n".join(out)


def json_report(results: list[FileResult]) -> str:
    """The SPEC's JSON: one object for one file, a list for several."""
    data = [r.to_dict() for r in results]
    return json.dumps(data[0] if len(data) == 1 else data, indent=2)


def progress_bar(done: int, total: int, width: int = 10) -> str:
    filled = round(width * done / total) if total else 0
    return "█" * filled + "░" * (width - filled)


def overview_report(entries, *, color: bool = False) -> str:
    """`grade` with no PATH: one line per exercise, the next thing to do, then the total."""
    out = []
    done = total = 0
    for entry in entries:
        checks = entry.result.checks if entry.result else entry.exercise.checks
        passing = entry.result.passing if entry.result else 0
        done, total = done + passing, total + checks
        bar = progress_bar(passing, checks)
        if color:
            bar = click.style(bar, fg="green" if entry.passed else "yellow")
        line = f"{entry.exercise.id}  {bar} {passing:>2}/{checks:<2}  {entry.exercise.title.split(': ', 1)[-1]}"
        out.append(line)
        if entry.why:
            out.append(f"     graded {entry.path.name} ({entry.why})")
        step = entry.next_step()
        if step:
            out.append(f"     next: {step}")
    complete = sum(entry.passed for entry in entries)
    out.append(f"total: {done}/{total} passing · {complete} of {len(entries)} exercises complete")
    return "\n".join(out)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def training_report(result) -> str:
    """`--train`: time, train and val loss beside the lecture's, and the sampled names."""
    from grader.training import LECTURE_RESULTS

    if result.error:
        return f"training stopped: {result.error}"
    per_step = result.seconds / result.steps * 1000
    out = [
        f"trained {result.steps:,} steps in {_duration(result.seconds)} ({per_step:.2f} ms a step)",
        f"{'':12}{'yours':>8}  {'lecture':>8}",
        f"{'train loss':12}{result.train_loss:8.4f}  {LECTURE_RESULTS['train']:8.4f}",
        f"{'val loss':12}{result.val_loss:8.4f}  {LECTURE_RESULTS['val']:8.4f}",
        "(the lecture's figures are for 200,000 steps on its own copy of the names)",
        "20 names sampled from your network:",
    ]
    out += [f"  {name}" for name in result.names]
    return "\n".join(out)


HTML_COLOURS = {
    Status.EXACT: "#1a7f37", Status.APPROX: "#0969da", Status.FAIL: "#cf222e",
    Status.BLANK: "#6e7781", Status.MISSING: "#9a6700", Status.ERROR: "#8250df",
}


def html_text(text: str) -> str:
    """A hint as HTML: escaped, with its `code` in code type."""
    from html import escape

    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text, quote=False))


def html_report(result: FileResult, *, message: str | None = None) -> str:
    """The same report as `text_report`, as HTML for Jupyter: the table with each line's cell and
    line, the summary, the first thing to fix, and a --names suggestion when there is one."""
    from html import escape

    if message and not result.results:
        return f"<p>{escape(message)}</p>"
    rows = []
    for r in result.results:
        colour = HTML_COLOURS[r.status]
        notes = "<br>".join(html_text(text) for text in (r.hint, r.about, r.warning) if text)
        rows.append(
            f"<tr><td><code>{escape(r.name)}</code></td>"
            f"<td style='color:{colour};font-weight:bold'>{r.status.value}</td>"
            f"<td>{_maxdiff(r.maxdiff)}</td><td style='white-space:nowrap'>{escape(where(r))}</td>"
            f"<td style='text-align:left'>{notes}</td></tr>"
        )
    title = escape(result.file) + (f" · {escape(result.exercise)}" if result.exercise else "")
    after = [escape(summary_line(result))]
    if result.training is not None:
        after.insert(0, escape(result.training.describe()))
    start = start_with(result, code=lambda text: f"<code>{escape(text)}</code>", ask=ask_jupyter)
    if start:
        after.append(start)
    if result.names:
        after.append(f"your names look like renamings of the lecture's: <code>check(names={escape(repr(result.names))})"
                     f"</code>")
    if result.error:
        after.insert(0, f"<b>error:</b> {escape(result.error)}")
    after += [f"note: {escape(note)}" for note in result.notes]
    return (
        f"<div><p><b>{title}</b></p>"
        "<table><thead><tr><th>gradient</th><th>status</th><th>maxdiff</th><th>where</th><th>why</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        + "".join(f"<p>{text}</p>" for text in after) + "</div>"
    )
