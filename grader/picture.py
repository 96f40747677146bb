"""The forward pass drawn as a graph, from `loss` down to the parameters, each tensor coloured by
its gradient's verdict: what `grade FILE --html` writes beside the table, and what `check()` shows
in Jupyter. A student sees at a glance where the chain breaks.

The graph is the one `grader.graph` reads from the forward pass the stub shows (a node per
tensor, an edge from each line to what it reads). It is laid out here, as plain SVG with no
script and nothing fetched: rows by the longest path from `loss` (so every edge points down,
the way backpropagation goes), each row ordered by where the nodes it feeds are.
"""

from __future__ import annotations

import functools
from html import escape

from grader.compare import FileResult, Status
from grader.configs import PARAMETER_NAMES

# (fill, outline, text) for each verdict; a tensor whose gradient the exercise does not ask for is grey.
# (The colours of the table's statuses, `reports.HTML_COLOURS`.)
STYLE = {
    Status.EXACT: ("#1a7f37", "#116329", "#ffffff"),
    Status.APPROX: ("#0969da", "#0550ae", "#ffffff"),
    Status.FAIL: ("#cf222e", "#82071e", "#ffffff"),
    Status.ERROR: ("#8250df", "#512a97", "#ffffff"),
    Status.BLANK: ("#f6f8fa", "#6e7781", "#424a53"),
    Status.MISSING: ("#fff8c5", "#9a6700", "#633c01"),
}
NOT_ASKED = ("#ffffff", "#d0d7de", "#8c959f")
LEGEND = [("exact", STYLE[Status.EXACT]), ("approx", STYLE[Status.APPROX]), ("fail", STYLE[Status.FAIL]),
          ("error", STYLE[Status.ERROR]), ("blank", STYLE[Status.BLANK]), ("not graded here", NOT_ASKED)]
CHAR, PAD, ROW, GAP, TOP = 7.8, 14, 62, 18, 58  # px: a character, padding, a row, between nodes, the legend


def graph(exercise) -> tuple[list[str], list[tuple[str, str]]]:
    """The tensors of an exercise's forward pass and its edges (consumer, input), in forward order:
    the part of it the exercise backpropagates through, from `loss` (or from the gradient it gives,
    `dhpreact` in exercise 3) down to the tensors whose gradients it asks for."""
    from grader.graph import lines_of

    lines = lines_of(exercise.forward)
    made = [line.target for line in lines]
    tensors = set(made) | set(PARAMETER_NAMES) | {t[1:] for t in exercise.graded}
    nodes, edges = [], []
    for line in lines:
        for read in sorted(line.reads & tensors):
            if read not in nodes and read not in made:
                nodes.append(read)
            edges.append((line.target, read))
        nodes.append(line.target)
    tops = {g[1:] for g in exercise.given} or {made[-1]}
    below, todo = set(tops), list(tops)  # what the backward pass reaches from the top
    while todo:
        node = todo.pop()
        for consumer, read in edges:
            if consumer == node and read not in below:
                below.add(read)
                todo.append(read)
    leads = {t[1:] for t in exercise.graded}  # and what leads down to an asked-for gradient
    changed = True
    while changed:
        more = {consumer for consumer, read in edges if read in leads} - leads
        leads |= more
        changed = bool(more)
    kept = below & leads
    return [n for n in nodes if n in kept], [(c, r) for c, r in edges if c in kept and r in kept]


def layout(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, tuple[float, float, float]]:
    """Each node's (x of its centre, y of its top, width), rows by the longest path from the last node."""
    depth = {node: 0 for node in nodes}
    for node in reversed(nodes):  # forward order: every consumer comes after what it reads
        for consumer, read in edges:
            if consumer == node:
                depth[read] = max(depth[read], depth[node] + 1)
    rows: dict[int, list[str]] = {}
    for node in nodes:
        rows.setdefault(depth[node], []).append(node)
    width = {node: len(node) * CHAR + 2 * PAD for node in nodes}
    place: dict[str, tuple[float, float, float]] = {}
    for level in sorted(rows):
        row = rows[level]
        if level:
            def above(node, row=row):
                xs = [place[c][0] for c, r in edges if r == node and c in place]
                return sum(xs) / len(xs) if xs else 0.0
            row.sort(key=above)
        total = sum(width[n] for n in row) + GAP * (len(row) - 1)
        x = -total / 2
        for node in row:
            place[node] = (x + width[node] / 2, TOP + level * ROW, width[node])
            x += width[node] + GAP
    return place


@functools.lru_cache(maxsize=None)
def _drawn(exercise):
    """An exercise's graph and where each node goes: the same for every student (a class's feedback
    draws it once a student)."""
    nodes, edges = graph(exercise)
    return nodes, edges, layout(nodes, edges)


def svg(result: FileResult, exercise, start: str | None = None) -> str:
    """The graph of one graded file, as an SVG element. `start`: the gradient to fix first, outlined."""
    nodes, edges, place = _drawn(exercise)
    verdicts = {r.name: r for r in result.results}
    left = min(x - w / 2 for x, _, w in place.values()) - 20
    right = max(x + w / 2 for x, _, w in place.values()) + 20
    left, right = min(left, -250), max(right, 250)  # (room for the legend, and for "start here")
    height = max(y for _, y, _ in place.values()) + ROW
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='bn-graph' viewBox='{left:.0f} 0 {right - left:.0f} "
           f"{height:.0f}' width='{right - left:.0f}' height='{height:.0f}' role='img' "
           f"aria-label='the forward pass of {escape(exercise.id)}, each tensor coloured by its gradient'>"]
    out.append("<defs><marker id='bn-arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' markerHeight='7' "
               "orient='auto-start-reverse'><path d='M 0 0 L 10 5 L 0 10 z' fill='#8c959f'/></marker></defs>")
    x = -245
    for label, (fill, stroke, _) in LEGEND:  # the legend, across the top
        out.append(f"<rect x='{x}' y='12' width='14' height='14' rx='3' fill='{fill}' stroke='{stroke}'/>"
                   f"<text x='{x + 19}' y='24' class='bn-legend'>{label}</text>")
        x += 19 + len(label) * 7.2 + 16
    for consumer, read in edges:
        (x1, top1, _), (x2, top2, _) = place[consumer], place[read]
        y1, y2 = top1 + 30, top2 - 2
        between = [px - pw / 2 for px, py, pw in place.values() if top1 < py < top2]
        if between:  # past the rows between: round the left of them, not through their nodes
            side = min(between + [x1, x2]) - 24
            shape = (f"M {x1:.1f} {y1:.1f} C {side:.1f} {y1 + 20:.1f}, {side:.1f} {y1 + 40:.1f}, {side:.1f} "
                     f"{(y1 + y2) / 2:.1f} S {x2:.1f} {y2 - 24:.1f}, {x2:.1f} {y2:.1f}")
        else:
            shape = f"M {x1:.1f} {y1:.1f} C {x1:.1f} {y1 + 24:.1f}, {x2:.1f} {y2 - 24:.1f}, {x2:.1f} {y2:.1f}"
        out.append(f"<path d='{shape}' fill='none' stroke='#8c959f' stroke-width='1.4' marker-end='url(#bn-arrow)'/>")
    for node in nodes:
        x, y, w = place[node]
        found = verdicts.get("d" + node)
        fill, stroke, ink = STYLE[found.status] if found else NOT_ASKED
        said = f"d{node}: {found.status.value}" if found else f"d{node}: not asked in this exercise"
        if found and found.hint:
            said += f": {found.hint}"
        first = found is not None and found.name == start
        dashed = " stroke-dasharray='4 3'" if found and found.status is Status.MISSING else ""
        out.append(f"<g class='bn-node'><title>{escape(said)}</title>"
                   f"<rect x='{x - w / 2:.1f}' y='{y}' width='{w:.1f}' height='30' rx='8' fill='{fill}' "
                   f"stroke='{'#212121' if first else stroke}' stroke-width='{3.5 if first else 1.5}'{dashed}/>"
                   f"<text x='{x:.1f}' y='{y + 20}' text-anchor='middle' class='bn-name' fill='{ink}'>"
                   f"{escape(node)}</text></g>")
        if first:  # named at the end of its row, clear of the nodes beside it
            end = max(px + pw / 2 for px, py, pw in place.values() if py == y)
            out.append(f"<text x='{end + 10:.1f}' y='{y + 20}' class='bn-start'>← start with d{escape(node)}</text>")
    out.append("</svg>")
    return "".join(out)


PAGE_CSS = 'body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #212121; }'
# The report's own style, scoped to its classes (Jupyter shows it inside the notebook's page).
CSS = """
.bn-result { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; margin-bottom: 36px; }
.bn-graph { flex: none; max-width: 100%; height: auto; }
.bn-graph text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 13px; }
.bn-graph .bn-legend { font-family: system-ui, sans-serif; fill: #424242; }
.bn-graph .bn-start { font-family: system-ui, sans-serif; font-weight: bold; fill: #212121; }
.bn-side { flex: 1 1 520px; min-width: 320px; }
.bn-side table { border-collapse: collapse; font-size: 14px; }
.bn-side th, .bn-side td { border-bottom: 1px solid #e0e0e0; padding: 4px 8px; vertical-align: top; text-align: left; }
.bn-side code { font-size: 13px; }
"""


def section(result: FileResult, exercise) -> str:
    """One graded file: its graph beside its table, hints and first step."""
    from grader.reports import first_to_fix, html_report

    first = first_to_fix(result)
    return (f"<div class='bn-result'>{svg(result, exercise, first.name if first else None)}"
            f"<div class='bn-side'>{html_report(result)}</div></div>")


def page(results: list[FileResult], *, title: str | None = None, intro: str = "") -> str:
    """A whole page for `grade --html`: every graded file's section, in one file that needs nothing
    else to open (no script, no font or style fetched). `intro` is HTML put before the sections
    (a student's score, in a class's feedback)."""
    from grader.exercises import BY_ID

    title = escape(title or ", ".join(dict.fromkeys(r.file for r in results)) or "backprop-ninja")
    body = intro + "".join(section(r, BY_ID[r.exercise]) for r in results if r.exercise in BY_ID)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title} · backprop-ninja</title>"
            f"<style>{PAGE_CSS}{CSS}</style></head><body>{body}</body></html>\n")
