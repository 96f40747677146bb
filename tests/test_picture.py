"""The HTML report: the forward pass drawn as a graph, each tensor coloured by its verdict, beside the
table; one file that opens offline; the same drawing in check(); and what a browser really shows."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from grader.cli import cli
from grader.compare import Status
from grader.exercises import EX1, EX2, EX3
from grader.picture import STYLE

from conftest import SOLUTION, grade_text, replace_line

FAIL_FILL, EXACT_FILL = STYLE[Status.FAIL][0], STYLE[Status.EXACT][0]


def fills(html: str) -> dict[str, str]:
    """Each drawn tensor's fill colour."""
    return dict((name, fill) for fill, name in re.findall(r"<rect [^>]*fill='([^']+)'[^>]*/><text [^>]*>([^<]+)</text></g>",
                                                          html))


def write_report(tmp_path: Path, source: str, name: str = "ex1_backprop_all.py") -> tuple[str, int]:
    path, report = tmp_path / name, tmp_path / "report.html"
    path.write_text(source)
    result = CliRunner().invoke(cli, [str(path), "--html", str(report)])
    return report.read_text(encoding="utf-8"), result.exit_code


def test_the_report_draws_every_tensor_in_its_verdicts_colour_and_points_at_the_first_to_fix(tmp_path):
    source = replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h")
    source = replace_line(source, "dbnmeani =", "dbnmeani = ...")
    html, code = write_report(tmp_path, source)
    assert code == 1
    drawn = fills(html)
    assert set(drawn) >= {t[1:] for t in EX1.targets} | {"loss"}
    assert drawn["W2"] == FAIL_FILL and drawn["bnmeani"] == STYLE[Status.BLANK][0]
    assert drawn["h"] == EXACT_FILL and drawn["b2"] == EXACT_FILL
    assert drawn["loss"] == "#ffffff"  # no gradient of its own is asked for
    assert "start with dW2" in html and "<code>dW2</code> has shape (27, 64)" in html  # the table and its hints


def test_a_right_file_is_drawn_without_a_single_failing_tensor(tmp_path):
    html, code = write_report(tmp_path, SOLUTION)
    assert code == 0 and "start with" not in html
    assert all(fill == EXACT_FILL for name, fill in fills(html).items() if name != "loss")  # (none red)


def test_an_exercise_asking_for_one_gradient_draws_only_what_it_goes_through(tmp_path):
    """Exercise 2 backpropagates from `loss` to `logits` in one go: those tensors, with the one asked
    for in its verdict's colour; exercise 3 starts from the `dhpreact` it is given."""
    html, _ = write_report(tmp_path, EX2.solution_path.read_text(), EX2.stub_path.name)
    drawn = fills(html)
    assert set(drawn) == {"loss", "logprobs", "probs", "counts_sum_inv", "counts_sum", "counts", "norm_logits",
                          "logit_maxes", "logits"}
    assert drawn["logits"] in (EXACT_FILL, STYLE[Status.APPROX][0]) and drawn["probs"] == "#ffffff"
    wrong = EX3.solution_path.read_text().replace("n/(n-1)*bnraw", "bnraw")
    html, _ = write_report(tmp_path, wrong, EX3.stub_path.name)
    drawn = fills(html)
    assert set(drawn) == {"hpreact", "bnraw", "bnvar_inv", "bnvar", "bndiff2", "bndiff", "bnmeani", "hprebn"}
    assert drawn["hprebn"] == FAIL_FILL and "start with dhprebn" in html


def test_the_page_needs_nothing_from_anywhere_to_open(tmp_path):
    html, _ = write_report(tmp_path, replace_line(SOLUTION, "dh =", "dh = dlogits @ W2"))
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<style>" in html
    for fetches in ("<script", " src=", "href=", "@import", "url(http", "<link"):
        assert fetches not in html, fetches


def test_a_report_that_cannot_be_written_is_one_sentence(tmp_path):
    path = tmp_path / "ex1_backprop_all.py"
    path.write_text(SOLUTION)
    result = CliRunner().invoke(cli, [str(path), "--html", str(tmp_path / "no" / "such" / "report.html")])
    assert result.exit_code == 2 and "cannot write" in result.output and "Traceback" not in result.output


def test_check_in_jupyter_shows_the_same_drawing():
    from grader.jupyter import CheckResult

    result = grade_text(replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h"))
    html = CheckResult([result])._repr_html_()
    assert "class='bn-graph'" in html and fills(html)["W2"] == FAIL_FILL and "<script" not in html


def png_pixels(path: Path) -> list[tuple[int, int, int]]:
    """The pixels of an 8-bit RGB or RGBA PNG (what Chromium writes), decoded by hand."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks, header = 8, b"", None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks += body
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0
    size = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(chunks), width * size
    rows, previous, position = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[position], bytearray(raw[position + 1:position + 1 + stride])
        position += 1 + stride
        for i in range(stride):
            a = line[i - size] if i >= size else 0
            b, c = previous[i], previous[i - size] if i >= size else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        previous = line
    return [tuple(row[i:i + 3]) for row in rows for i in range(0, stride, size)]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (Debian package chromium)")
@pytest.mark.parametrize("right", [False, True])
def test_a_browser_renders_the_failing_tensor_in_red_and_a_right_file_in_green(tmp_path, right):
    source = SOLUTION if right else replace_line(SOLUTION, "dW2 =", "dW2 = dlogits.T @ h")
    write_report(tmp_path, source)
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1400", f"--screenshot={shot}", (tmp_path / "report.html").as_uri()],
                   capture_output=True, timeout=120, cwd=tmp_path)
    pixels = png_pixels(shot)

    def count(hex_colour: str) -> int:
        wanted = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        return sum(all(abs(p - w) <= 6 for p, w in zip(pixel, wanted)) for pixel in pixels)

    assert count(EXACT_FILL) > 20_000  # two dozen green tensors
    assert (count(FAIL_FILL) > 500) is not right  # W2's box, only when dW2 is wrong
