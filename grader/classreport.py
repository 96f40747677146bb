"""OUT/report.html: one self-contained page that tells an instructor, in a minute, who needs help
and with what. Drawn here as plain HTML and SVG: no script, nothing fetched when it is opened.

    at a glance        how many students are ok, partial, in error, timed out, broke the policy, missing
    needs attention    each student and exercise to look at, and why, with a link to their feedback
    hardest gradients  every gradient by pass rate, with its commonest mistakes in the hints' words
    scores             a histogram of totals
    heatmap            students (lowest total first) by gradients, each cell its verdict's colour
"""

from __future__ import annotations

from html import escape

from grader.compare import FileResult, Status
from grader.exercises import BY_ID
from grader.picture import NOT_ASKED, PAGE_CSS, STYLE, page
from grader.reports import HTML_COLOURS, html_text, printable

# A student's status in the colour of the verdict it is closest to; a time-out in orange of its own.
STATUS_COLOURS = {"ok": HTML_COLOURS[Status.EXACT], "partial": HTML_COLOURS[Status.MISSING],
                  "error": HTML_COLOURS[Status.ERROR], "timeout": "#bc4c00", "policy": HTML_COLOURS[Status.FAIL],
                  "missing": HTML_COLOURS[Status.BLANK], "unrecognised": HTML_COLOURS[Status.BLANK],
                  "blank": HTML_COLOURS[Status.BLANK]}
CELL, GAP, APART = 15, 2, 12  # px: a heatmap cell, the space between cells, and between exercises
CHAR = 8  # px: the widest a name's character is likely to be, at the heatmap's 12 px
REPORT_CSS = """
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 30px 0 8px; } h3 { font-size: 16px; margin: 18px 0 6px; }
.cr-sub { color: #57606a; margin: 0 0 14px; }
.cr-counts { display: flex; flex-wrap: wrap; gap: 10px; margin: 12px 0; }
.cr-count { border: 1px solid #d0d7de; border-radius: 8px; padding: 6px 12px; min-width: 74px; }
.cr-count b { display: block; font-size: 22px; }
.cr-badge { display: inline-block; border-radius: 10px; padding: 1px 8px; color: #fff; font-size: 12px; font-weight: 600; }
table.cr { border-collapse: collapse; font-size: 14px; }
table.cr th, table.cr td { border-bottom: 1px solid #e0e0e0; padding: 5px 9px; text-align: left; vertical-align: top; }
table.cr th { background: #f6f8fa; }
.cr-bar { display: inline-block; width: 80px; height: 9px; background: #eaeef2; border-radius: 4px; margin-right: 6px; }
.cr-bar i { display: block; height: 9px; border-radius: 4px; background: #1a7f37; }
.cr-hint { color: #424a53; } .cr-n { font-weight: 600; white-space: nowrap; }
.cr-graphs { display: flex; flex-wrap: wrap; gap: 36px; align-items: flex-start; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 12px; fill: #24292f; }
svg .cr-mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 11px; }
svg a text { fill: #0969da; }
code { font-size: 13px; }
"""


def _badge(status: str) -> str:
    return f"<span class='cr-badge' style='background:{STATUS_COLOURS[status]}'>{escape(status)}</span>"


def _link(student) -> str:
    return f"<a href='feedback/{escape(student.feedback)}.html'><bdi>{escape(student.name)}</bdi></a>"


def columns(manifest: dict, students) -> list[tuple[str, str]]:
    """(exercise, gradient) of every heatmap column: each assigned exercise's targets, and its training run."""
    out = []
    for exercise in manifest["assigned"]:
        out += [(exercise, target) for target in BY_ID[exercise].targets]
        if any(s.records.get(exercise, {}).get("result", {}).get("training") is not None for s in students):
            out.append((exercise, "training run"))
    return out


def _cell(student, exercise: str, gradient: str) -> tuple[str, str, str]:
    """(fill, outline, what a hover says) of one heatmap cell."""
    result = student.records[exercise]["result"]
    if gradient == "training run":
        training = result.get("training") or {}
        status = Status.EXACT if training.get("passed") else Status.FAIL
        return STYLE[status][0], STYLE[status][1], f"training run: {'passes' if training.get('passed') else 'fails'}"
    found = next((r for r in result["results"] if r["name"] == gradient), None)
    if found is None:
        return NOT_ASKED[0], NOT_ASKED[1], "not graded"
    fill, stroke, _ = STYLE[Status(found["status"])]
    said = f"{gradient}: {found['status']}" + (f": {found['hint']}" if found.get("hint") else "")
    return fill, stroke, said


def heatmap(manifest: dict, students) -> str:
    """Students by gradients, lowest total on top; a student's name links to their feedback. An
    exercise not handed in is a row of dots."""
    cols = columns(manifest, students)
    rows = sorted(students, key=lambda s: (s.total / (s.max_total or 1), s.name))
    label = min(max([len(s.name) for s in students] + [8]) * CHAR + 16, 240)
    head = 118
    xs, x, previous = [], label, None
    for exercise, _ in cols:
        if previous is not None:
            x += CELL + GAP + (APART if exercise != previous else 0)
        xs.append(x)
        previous = exercise
    right = (xs[-1] + CELL if xs else label) + 8
    width = right + 60
    height = head + len(rows) * (CELL + GAP) + 44
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
           f"role='img' aria-label='every student by every gradient, coloured by verdict'>"]
    for exercise in manifest["assigned"]:  # the exercise over its columns
        mine = [x for x, (e, _) in zip(xs, cols) if e == exercise]
        if mine:
            out.append(f"<text x='{mine[0]}' y='14' font-weight='600'>{escape(exercise)}</text>"
                       f"<line x1='{mine[0]}' x2='{mine[-1] + CELL}' y1='19' y2='19' stroke='#8c959f'/>")
    for x, (_, gradient) in zip(xs, cols):
        out.append(f"<text class='cr-mono' transform='translate({x + CELL / 2 + 4:.1f},{head - 6}) rotate(-62)'>"
                   f"{escape(gradient)}</text>")
    for row, student in enumerate(rows):
        y = head + row * (CELL + GAP)
        name = printable(student.name)  # (SVG text has no <bdi>: direction controls are dropped)
        name = name if len(name) * CHAR + 16 <= label else name[: (label - 16) // CHAR - 1] + "…"
        out.append(f"<a href='feedback/{escape(student.feedback)}.html'><text x='{label - 8}' y='{y + CELL - 3}' "
                   f"text-anchor='end'><title>{escape(student.name)}</title>{escape(name)}</text></a>")
        for x, (exercise, gradient) in zip(xs, cols):
            if exercise not in student.records:
                out.append(f"<circle cx='{x + CELL / 2}' cy='{y + CELL / 2}' r='1.6' fill='#8c959f'>"
                           f"<title>{escape(student.name)} · {escape(exercise)} not submitted</title></circle>")
                continue
            fill, stroke, said = _cell(student, exercise, gradient)
            out.append(f"<rect x='{x}' y='{y}' width='{CELL}' height='{CELL}' rx='2' fill='{fill}' stroke='{stroke}' "
                       f"stroke-width='0.6'><title>{escape(student.name)} · {escape(said)}</title></rect>")
        score = f"{student.total:g}/{student.max_total:g}"
        out.append(f"<text x='{right}' y='{y + CELL - 3}' class='cr-mono'>{score}</text>")
    y = head + len(rows) * (CELL + GAP) + 18
    x = label
    legend = [(status.value, STYLE[status]) for status in (Status.EXACT, Status.APPROX, Status.FAIL, Status.ERROR,
                                                            Status.BLANK, Status.MISSING)]
    for text, (fill, stroke, _) in legend:
        out.append(f"<rect x='{x}' y='{y}' width='12' height='12' rx='2' fill='{fill}' stroke='{stroke}'/>"
                   f"<text x='{x + 16}' y='{y + 10}'>{text}</text>")
        x += 16 + len(text) * 7 + 14
    out.append(f"<circle cx='{x + 6}' cy='{y + 6}' r='1.6' fill='#8c959f'/><text x='{x + 16}' y='{y + 10}'>"
               f"not submitted</text></svg>")
    return "".join(out)


def histogram(students) -> str:
    """How many students scored in each tenth of the marks (and how many got them all)."""
    bins = [0] * 11
    for student in students:
        share = student.total / student.max_total if student.max_total else 0.0
        bins[10 if share >= 1 else min(int(share * 10), 9)] += 1
    labels = [f"{10 * i}–{10 * i + 9}" for i in range(10)] + ["100"]
    bar, space, top, tall = 34, 8, 24, 150
    highest = max(bins) or 1
    width = 40 + len(bins) * (bar + space)
    height = top + tall + 46
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
           f"role='img' aria-label='a histogram of the students’ total scores'>"]
    out.append(f"<line x1='30' x2='{width - 4}' y1='{top + tall}' y2='{top + tall}' stroke='#8c959f'/>")
    for index, count in enumerate(bins):
        x = 34 + index * (bar + space)
        h = tall * count / highest
        colour = "#1a7f37" if index == 10 else "#0969da"
        out.append(f"<rect x='{x}' y='{top + tall - h:.1f}' width='{bar}' height='{h:.1f}' fill='{colour}' rx='2'>"
                   f"<title>{count} students scored {labels[index]}%</title></rect>")
        if count:
            out.append(f"<text x='{x + bar / 2}' y='{top + tall - h - 5:.1f}' text-anchor='middle'>{count}</text>")
        out.append(f"<text x='{x + bar / 2}' y='{top + tall + 16}' text-anchor='middle' font-size='10'>{labels[index]}</text>")
    out.append(f"<text x='{width / 2}' y='{height - 6}' text-anchor='middle'>% of the marks</text></svg>")
    return "".join(out)


def not_submitted(summary: dict) -> dict[str, list[str]]:
    """exercise -> the students who did not hand it in (from the summary's attention list)."""
    out: dict[str, list[str]] = {}
    for item in summary["needs_attention"]:
        if item["status"] == "missing":
            out.setdefault(item["exercise"], []).append(item["student"])
    return {exercise: sorted(out[exercise], key=lambda n: (n.casefold(), n)) for exercise in BY_ID if exercise in out}


def _attention_table(summary: dict, by_name: dict) -> str:
    """The files to look at, most urgent first, then who did not hand in what, one line an exercise."""
    items = [item for item in summary["needs_attention"] if item["status"] != "missing"]
    rows = []
    for item in items:
        student = by_name[item["student"]]
        rows.append(f"<tr><td>{_link(student)}</td><td>{escape(item['exercise'] or '')}</td>"
                    f"<td>{_badge(item['status'])}</td><td class='cr-hint'>{html_text(item['why'])}</td></tr>")
    html = ("<table class='cr'><tr><th>student</th><th>exercise</th><th>status</th><th>why</th></tr>"
            + "".join(rows) + "</table>") if rows else "<p>No file needs a look: every one ran.</p>"
    missing = not_submitted(summary)
    if missing:
        html += "<h3>Not submitted</h3><table class='cr'>" + "".join(
            f"<tr><td>{escape(exercise)}</td><td class='cr-n'>{len(names)}</td>"
            f"<td>{', '.join(_link(by_name[name]) for name in names)}</td></tr>" for exercise, names in missing.items()
        ) + "</table>"
    return html


def _gradient_table(summary: dict) -> str:
    rows = []
    perfect = [row for row in summary["hardest"] if row["passing"] == row["graded"]]
    for row in summary["hardest"]:
        if row in perfect:
            continue
        share = row["passing"] / row["graded"]
        mistakes = "<br>".join(f"<span class='cr-n'>{m['count']} ×</span> <span class='cr-hint'>{html_text(m['hint'])}</span>"
                               for m in row["mistakes"])
        rows.append(f"<tr><td><code>{escape(row['gradient'])}</code></td><td>{escape(row['exercise'])}</td>"
                    f"<td style='white-space:nowrap'><span class='cr-bar'><i style='width:{share:.0%}'></i></span>"
                    f"{row['passing']}/{row['graded']}</td><td>{mistakes}</td></tr>")
    table = ("<table class='cr'><tr><th>gradient</th><th>exercise</th><th>pass</th><th>most common mistakes</th></tr>"
             + "".join(rows) + "</table>") if rows else "<p>Every gradient passes for everyone whose file ran.</p>"
    if rows and perfect:
        table += ("<p class='cr-hint'>Right for everyone whose file ran: "
                  + ", ".join(f"<code>{escape(row['gradient'])}</code> ({escape(row['exercise'])})" for row in perfect)
                  + ".</p>")
    return table


def report_page(manifest: dict, students, summary: dict) -> str:
    """The whole report, as one HTML file."""
    by_name = {s.name: s for s in students}
    counts = "".join(f"<div class='cr-count'><b style='color:{STATUS_COLOURS[status]}'>"
                     f"{summary['statuses'].get(status, 0)}</b>{status}</div>"
                     for status in ("ok", "partial", "error", "timeout", "policy", "missing"))
    mean = sum(s.total for s in students) / len(students) if students else 0.0
    most = students[0].max_total if students else 0
    sub = (f"{summary['students']} students · {summary['submissions']} graded submissions · "
           f"exercises {', '.join(manifest['assigned']) or 'none'} · mean {mean:.1f}/{most:g}"
           + (f" · {summary['late']} late" if summary.get("late") else ""))
    others = []
    for key, title in (("unrecognised", "Files that answer no exercise"),
                       ("unassigned", "Files for exercises not in this assignment, not graded"),
                       ("duplicates", "Earlier attempts, not graded"),
                       ("skipped", "Not read (unsafe, or the outputs of a batch)")):
        if summary.get(key):
            others.append(f"<h2>{title} ({len(summary[key])})</h2><p>"
                          + ", ".join(f"<code>{escape(n)}</code>" for n in summary[key]) + "</p>")
    assigned = manifest["assigned"]
    students_table = "".join(
        f"<tr><td>{_link(s)}</td><td>{s.total:g}/{s.max_total:g}</td>"
        + "".join(f"<td>{s.records[e]['score']:g}</td>" if e in s.records else "<td>·</td>" for e in assigned)
        + f"<td>{_badge(s.status)}</td><td>{escape(' '.join(s.late))}</td></tr>" for s in students)
    body = (f"<h1>Class report</h1><p class='cr-sub'>{escape(sub)}</p><div class='cr-counts'>{counts}</div>"
            f"<h2>Needs attention</h2>{_attention_table(summary, by_name)}"
            f"<h2>Gradients, hardest first</h2><p class='cr-sub'>Counted over the files that ran through: one that "
            f"stopped (a syntax error, a time limit) or came back blank is in the list above instead.</p>"
            f"{_gradient_table(summary)}"
            f"<div class='cr-graphs'><div><h2>Scores</h2>{histogram(students)}</div>"
            f"<div><h2>Every student, every gradient</h2>{heatmap(manifest, students)}</div></div>"
            + "".join(others)
            + "<h2>Students</h2><table class='cr'><tr><th>student</th><th>total</th>"
            + "".join(f"<th>{escape(e)}</th>" for e in assigned)
            + f"<th>status</th><th>late</th></tr>{students_table}</table>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Class report · backprop-ninja</title>"
            f"<style>{PAGE_CSS}{REPORT_CSS}</style></head><body>{body}</body></html>\n")


def student_page(student, header: list[str]) -> str:
    """A student's feedback as HTML: their score and what is missing, then each exercise as
    `grade FILE --html` draws it."""
    results = [FileResult.from_dict(student.records[e]["result"]) for e in BY_ID if e in student.records]
    intro = ("<h1 style='font-size:22px'>" + escape(header[0]) + "</h1>"
             + "".join(f"<p>{escape(line)}</p>" for line in header[1:]))
    return page(results, title=f"{student.name} · feedback", intro=intro)
