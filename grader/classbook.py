"""A class's outputs: who handed in what (OUT/class.json) and the verdicts (OUT/results.jsonl) become

    gradebook.csv           a row per student: total, each exercise, a status, and `late`
    feedback/<student>.*    their score first, then each exercise's report (.txt, .json, .html)
    summary.json            the class in numbers
    report.html             who needs attention, the hardest gradients, the scores, a heatmap

Everything here is built from those two files, so a class graded in shards on several machines
and merged (`grade merge`) gives the same outputs, byte for byte, as one run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from grader.classreport import not_submitted, report_page, student_page
from grader.execution import ran_out_of_time
from grader.exercises import BY_ID
from grader.outputs import load_results, record_key, replace_folder, safe_cell, write_atomically, write_plainly
from grader.reports import printable

# A student's status is the most urgent of their exercises'.
STATUSES = ("policy", "timeout", "error", "missing", "partial", "ok")
CLASS_FILE = "class.json"
MAX_SHARDS = 10_000


class MergeError(Exception):
    """The shards cannot be merged: one sentence."""


# --- what a batch found ---


def valid_shard(index: int, shards: int) -> bool:
    """Whether shard `index` of `shards` (I/N, from 1) is one `grade batch --shard` accepts."""
    return 1 <= index <= shards <= MAX_SHARDS


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether a student (or a file, by its name) belongs to shard (I, N), from 1; everything belongs
    to no shard (None). The same on every machine and in every run, whatever else is in the class."""
    if shard is None:
        return True
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8]
    return int.from_bytes(digest, "big") % shard[1] == shard[0] - 1


def class_manifest(found, version: str, assigned: list[str], shard: tuple[int, int] | None = None) -> dict:
    """What a batch found, as OUT/class.json: every submission graded (its file, digest and late
    flag), and every file not graded. With `shard` (I, N), only the students of shard I of N; the
    class's fingerprint is of the whole class, so merged shards can be checked to be of one class."""
    everything = sorted(f"{s.student}\0{s.exercise.id}\0{s.digest}" for s in found.submissions)
    fingerprint = hashlib.sha256("\n".join(everything + sorted(found.unrecognised)).encode("utf-8", "surrogatepass"))

    return {
        "grader_version": version,
        "assigned": list(assigned),
        "shard": list(shard) if shard else None,
        "fingerprint": fingerprint.hexdigest(),
        "submissions": [{"student": s.student, "exercise": s.exercise.id, "file": s.name, "sha256": s.digest,
                         "late": s.late} for s in found.submissions if in_shard(s.student, shard)],
        "unrecognised": sorted(name for name in found.unrecognised if in_shard(found.owners.get(name, name), shard)),
        "unassigned": sorted(name for name in found.unassigned if in_shard(found.owners.get(name, name), shard)),
        "owners": {name: student for name, student in found.owners.items() if in_shard(student, shard)},
        "duplicates": sorted(name for name in found.duplicates if in_shard(name, shard)),
        "skipped": sorted(name for name in found.skipped if in_shard(name, shard)),
    }


def well_formed(manifest) -> bool:
    """Whether a class.json read back has every field, of the types `class_manifest` writes."""
    strings = lambda value: isinstance(value, list) and all(isinstance(x, str) for x in value)  # noqa: E731
    try:
        shard = manifest["shard"]
        return (isinstance(manifest["grader_version"], str) and isinstance(manifest["fingerprint"], str)
                and strings(manifest["assigned"]) and all(e in BY_ID for e in manifest["assigned"])
                and (shard is None or (isinstance(shard, list) and len(shard) == 2
                                       and all(type(x) is int for x in shard) and valid_shard(*shard)))
                and all(strings(manifest[key]) for key in ("unrecognised", "unassigned", "duplicates", "skipped"))
                and isinstance(manifest["owners"], dict)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["owners"].items())
                and isinstance(manifest["submissions"], list)
                and all(isinstance(s, dict) and all(isinstance(s.get(k), str) for k in ("student", "exercise", "file",
                                                                                        "sha256"))
                        and s["exercise"] in BY_ID and isinstance(s.get("late"), bool)
                        for s in manifest["submissions"]))
    except (KeyError, TypeError):
        return False


def merged_manifest(parts: list[dict]) -> dict:
    """One class from its shards, each shard once. Raises MergeError when they are not one class's
    shards 1..N, graded by one version of the grader."""
    shards = [tuple(part["shard"]) for part in parts]
    total = shards[0][1]
    if any(n != total for _, n in shards):
        raise MergeError("these outputs were split into different numbers of shards")
    if sorted(i for i, _ in shards) != list(range(1, total + 1)):
        missing = sorted(set(range(1, total + 1)) - {i for i, _ in shards})
        twice = sorted(i for i, count in Counter(i for i, _ in shards).items() if count > 1)
        if twice:
            raise MergeError(f"shard {twice[0]}/{total} is given twice")
        raise MergeError(f"shard {missing[0]}/{total} is missing: merge needs every shard's output")
    for key, what in (("assigned", "for different exercises (--exercise)"),
                      ("grader_version", "by different versions of the grader, or with different settings "
                                         "(--config, --timeout)"),
                      ("fingerprint", "from different submissions")):
        if len({json.dumps(part[key]) for part in parts}) > 1:
            raise MergeError(f"these shards were graded {what}: grade every shard again with the same command")
    whole = {key: parts[0][key] for key in ("grader_version", "assigned", "fingerprint")}
    whole["shard"] = None
    whole["submissions"] = [s for part in parts for s in part["submissions"]]
    for key in ("unrecognised", "unassigned", "duplicates", "skipped"):
        whole[key] = sorted(name for part in parts for name in part[key])
    whole["owners"] = {name: student for part in parts for name, student in part["owners"].items()}
    return whole


# --- each student's standing ---


def exercise_status(record: dict) -> str:
    """`ok`, `partial`, `error`, `timeout` or `policy` for one graded exercise."""
    result = record["result"]
    if any(r.get("policy") for r in result["results"]):
        return "policy"
    training_error = (result.get("training") or {}).get("error")
    if ran_out_of_time(result.get("error")) or ran_out_of_time(training_error):
        return "timeout"
    if result.get("error"):
        return "error"
    return "ok" if record["passed"] else "partial"


def untouched(record: dict) -> bool:
    """A file with not one gradient written: the stub as it was handed out."""
    results = record["result"]["results"]
    return bool(results) and all(r["status"] in ("blank", "missing") for r in results)


def _names(names: list[str], most: int = 4) -> str:
    shown = ", ".join(f"`{name}`" for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def why(record: dict, status: str) -> str:
    """In a sentence, why an exercise needs the instructor's attention."""
    result = record["result"]
    if status == "policy":
        used = Counter(r["policy"] for r in result["results"] if r.get("policy"))
        return "; ".join(f"uses {what} for " + _names([r["name"] for r in result["results"] if r.get("policy") == what])
                         for what in used)
    return result.get("error") or (result.get("training") or {}).get("error") or status


@dataclass
class Student:
    name: str
    feedback: str  # the file name (no suffix) of their feedback
    records: dict[str, dict] = field(default_factory=dict)  # exercise -> its current result record
    late: list[str] = field(default_factory=list)  # exercises handed in late
    strays: list[str] = field(default_factory=list)  # their files that answer no exercise
    statuses: dict[str, str] = field(default_factory=dict)  # exercise -> status (`missing` included)
    total: float = 0.0
    max_total: float = 0.0

    @property
    def status(self) -> str:
        return min(self.statuses.values(), key=STATUSES.index, default="missing")


MAX_FILENAME = 80  # characters of a feedback file's name, before its suffix (file systems allow 255 bytes)


def safe_filename(student: str, taken: set[str]) -> str:
    """A file name for a student's feedback: letters, digits, `.`, `_` and `-`, at most MAX_FILENAME
    characters, and unique in `taken` ignoring case (as a case-insensitive disk sees it)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", student).strip("._")[:MAX_FILENAME] or "student"
    name, n = base, 2
    while name.casefold() in taken:
        name, n = f"{base[:MAX_FILENAME - 8]}-{n}", n + 1
    taken.add(name.casefold())
    return name


def feedback_names(names: list[str]) -> dict[str, str]:
    """Each student's feedback file name. A student whose name is already a safe file name gets it
    exactly, so nobody else's feedback can take `alice.html` from `alice`."""
    taken: set[str] = set()
    chosen = {}
    for name in names:
        if safe_filename(name, set()) == name and name.casefold() not in taken:
            chosen[name] = safe_filename(name, taken)
    for name in names:
        if name not in chosen:
            chosen[name] = safe_filename(name, taken)
    return chosen


def standings(manifest: dict, records: list[dict]) -> list[Student]:
    """Every student of the class, in name order, with the results of what they handed in."""
    latest = {}
    for record in records:  # the last line for a key wins
        latest[record_key(record)] = record
    version, assigned = manifest["grader_version"], manifest["assigned"]
    names = {s["student"] for s in manifest["submissions"]} | set(manifest["owners"].values())
    ordered = sorted(names, key=lambda n: (n.casefold(), n))
    files = feedback_names(ordered)
    students = {name: Student(name, files[name]) for name in ordered}
    for item in manifest["submissions"]:
        record = latest.get((item["student"], item["exercise"], item["sha256"], version))
        student = students[item["student"]]
        if record is not None:
            student.records[item["exercise"]] = record
            if item["late"]:
                student.late.append(item["exercise"])
    strays = set(manifest["unrecognised"])
    for name, owner in sorted(manifest["owners"].items()):
        if name in strays:
            students[owner].strays.append(name)
    for student in students.values():
        student.late = [e for e in BY_ID if e in student.late]  # in the exercises' order, however found
        student.statuses = {e: exercise_status(student.records[e]) if e in student.records else "missing"
                            for e in assigned}
        student.total = sum(student.records[e]["score"] for e in assigned if e in student.records)
        student.max_total = sum(BY_ID[e].max_score for e in assigned)
    return list(students.values())


def attention(students: list[Student]) -> list[dict]:
    """Who needs the instructor, and why: time-outs, policy, files that cannot be graded, files that
    answer no exercise, and exercises not handed in."""
    out = []
    for student in students:
        for exercise, status in student.statuses.items():
            if status in ("policy", "timeout", "error"):
                reason = why(student.records[exercise], status)
            elif status == "missing":
                reason = "not submitted"
            elif untouched(student.records[exercise]):
                status, reason = "blank", "handed in with no gradient written"
            else:
                continue
            out.append({"student": student.name, "exercise": exercise, "status": status, "why": reason,
                        "feedback": student.feedback})
        for name in student.strays:
            out.append({"student": student.name, "exercise": None, "status": "unrecognised",
                        "why": f"{name} answers no exercise", "feedback": student.feedback})
    urgency = (*STATUSES[:3], "unrecognised", "blank", "missing")
    return sorted(out, key=lambda item: urgency.index(item["status"]))  # the most urgent first, then by name


def hint_kind(result: dict) -> str | None:
    """A short label for what went wrong, to count across a class."""
    status, hint = result["status"], result.get("hint") or ""
    if status in ("exact", "approx"):
        return None
    if status in ("blank", "missing", "error"):
        return status
    if result.get("policy"):
        return f"used {result['policy']}"
    match = re.search(r"but not the one through `(\w+)`", hint)
    if match:
        return f"misses the branch through `{match.group(1)}`"
    for needle, label in [
        ("hard-coded", "hard-codes a size"), ("zero in truth", "right only because the true gradient is zero"),
        ("transpose", "transposed"), ("size-1 axis is missing", "forgets keepdim=True"),
        ("broadcast to", "forgets to sum over a broadcast dimension"), ("opposite sign", "has the sign flipped"),
        ("Bessel", "forgets Bessel's correction"), ("times the right gradient", "is off by a constant factor"),
        ("all zeros", "is all zeros (an overwritten accumulation?)"), ("not a tensor", "is not a tensor"),
        ("dtype", "has the wrong dtype"), ("NaN", "has NaN or infinite values"),
        ("right except in", "is wrong in a few entries"), ("upstream gradients only", "has a wrong formula"),
    ]:
        if needle in hint:
            return label
    return "wrong values"


WORDS = {"blank": "left blank", "missing": "never assigned", "error": "raises an error"}


def gradient_table(manifest: dict, students: list[Student]) -> list[dict]:
    """Every graded gradient (and training run), hardest first: its pass rate, and its most common
    mistakes, each with how many made it and the hint they were given, in the hint's words. Files
    that did not run through (a syntax error, a time limit), and stubs handed in with nothing
    written, are left out: they say nothing about a gradient, and the attention list has them."""
    rows = []
    for exercise_id in manifest["assigned"]:
        graded = [s.records[exercise_id]["result"] for s in students
                  if exercise_id in s.records and not s.records[exercise_id]["result"].get("error")
                  and not untouched(s.records[exercise_id])]
        if not graded:
            continue
        for order, target in enumerate(BY_ID[exercise_id].targets):
            found = [next((x for x in r["results"] if x["name"] == target), None) for r in graded]
            found = [x for x in found if x is not None]
            kinds: dict[str, Counter] = {}
            for x in found:
                kind = hint_kind(x)
                if kind:
                    kinds.setdefault(kind, Counter())[WORDS.get(kind) or x.get("hint") or kind] += 1
            mistakes = sorted(kinds.items(), key=lambda item: (-sum(item[1].values()), item[0]))
            rows.append({
                "exercise": exercise_id, "gradient": target, "order": order, "graded": len(found),
                "passing": sum(x["status"] in ("exact", "approx") for x in found),
                "mistakes": [{"what": kind, "count": sum(words.values()), "hint": words.most_common(1)[0][0]}
                             for kind, words in mistakes[:3]],
            })
        trained = [r["training"] for r in graded if r.get("training") is not None]
        if trained:
            fails = Counter((t.get("error") or "does not track autograd's training") for t in trained if not t["passed"])
            rows.append({"exercise": exercise_id, "gradient": "training run", "order": len(BY_ID[exercise_id].targets),
                         "graded": len(trained), "passing": sum(t["passed"] for t in trained),
                         "mistakes": [{"what": "training", "count": c, "hint": text} for text, c in fails.most_common(3)]})
    exercise_order = list(BY_ID)
    rows.sort(key=lambda r: (r["passing"] / r["graded"], exercise_order.index(r["exercise"]), r["order"]))
    return rows


# --- the outputs ---


def _score(value: float) -> str:
    return f"{value:g}"


def score_line(student: Student, assigned: list[str]) -> str:
    parts = []
    for exercise in assigned:
        if exercise in student.records:
            record = student.records[exercise]
            parts.append(f"{exercise} {_score(record['score'])}/{_score(record['max_score'])}")
        else:
            parts.append(f"{exercise} not submitted")
    return f"{printable(student.name)}: {_score(student.total)}/{_score(student.max_total)} · " + " · ".join(parts)


def feedback_header(student: Student, assigned: list[str]) -> list[str]:
    """What a student's feedback opens with: the score, and what is missing, late or not recognised."""
    lines = [score_line(student, assigned)]
    missing = [e for e in assigned if e not in student.records]
    if missing:
        lines.append("Not submitted: " + ", ".join(f"{e} ({BY_ID[e].slug}.py or .ipynb)" for e in missing))
    if student.late:
        lines.append("Handed in late (by the file name): " + ", ".join(student.late))
    if student.strays:
        lines.append("Not graded, as they answer no exercise: " + ", ".join(printable(name) for name in student.strays))
    return lines


def gradebook_csv(manifest: dict, students: list[Student]) -> str:
    assigned = manifest["assigned"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["student", "total", "max_total", "status", "late", *assigned])
    for student in students:
        writer.writerow([safe_cell(printable(student.name)), _score(student.total), _score(student.max_total), student.status,
                         " ".join(student.late),
                         *[_score(student.records[e]["score"]) if e in student.records else "" for e in assigned]])
    return buffer.getvalue()


def summarise(manifest: dict, students: list[Student]) -> dict:
    assigned = manifest["assigned"]
    graded = [r for s in students for r in s.records.values()]
    summary = {
        "grader_version": manifest["grader_version"], "students": len(students), "submissions": len(graded),
        "assigned": assigned, "statuses": {k: v for k, v in Counter(s.status for s in students).items()},
        "late": sum(bool(s.late) for s in students),
        "unrecognised": manifest["unrecognised"], "unassigned": manifest["unassigned"],
        "duplicates": manifest["duplicates"], "skipped": manifest["skipped"],
        "exercises": {}, "hardest": [], "needs_attention": attention(students),
    }
    table = gradient_table(manifest, students)
    for exercise_id in assigned:
        rows = [s.records[exercise_id] for s in students if exercise_id in s.records]
        if not rows:
            continue
        summary["exercises"][exercise_id] = {
            "submissions": len(rows),
            "complete": sum(r["passed"] for r in rows),
            "mean_score": sum(r["score"] for r in rows) / len(rows),
            "max_score": BY_ID[exercise_id].max_score,
            "gradients": {
                row["gradient"]: {"passing": row["passing"] / row["graded"],
                                  "mistakes": [{"what": m["what"], "share": m["count"] / row["graded"],
                                                "count": m["count"], "hint": m["hint"]} for m in row["mistakes"]]}
                for row in sorted((r for r in table if r["exercise"] == exercise_id), key=lambda r: r["order"])
            },
        }
    summary["hardest"] = [{k: row[k] for k in ("exercise", "gradient", "graded", "passing", "mistakes")}
                          for row in table]
    return summary


def write_outputs(out: Path, *, log=print) -> dict:
    """The gradebook, each student's feedback, the summary and the report, from OUT/class.json and
    OUT/results.jsonl; returns the summary."""
    manifest = json.loads((out / CLASS_FILE).read_text(encoding="utf-8"))
    students = standings(manifest, load_results(out / "results.jsonl"))
    assigned = manifest["assigned"]
    write_atomically(out / "gradebook.csv", gradebook_csv(manifest, students))

    def write_feedback(folder: Path) -> None:
        for student in students:
            rows = [student.records[e] for e in BY_ID if e in student.records]
            header = feedback_header(student, assigned)
            write_plainly(folder / f"{student.feedback}.txt",
                          "\n\n".join(["\n".join(header), *(r["report"] for r in rows)]) + "\n")
            # One result to a line: `indent` would take the pure-Python encoder, a second a class.
            write_plainly(folder / f"{student.feedback}.json",
                          "[\n" + ",\n".join(json.dumps(r["result"]) for r in rows) + "\n]\n")
            write_plainly(folder / f"{student.feedback}.html", student_page(student, header))

    replace_folder(out / "feedback", write_feedback)
    summary = summarise(manifest, students)
    write_atomically(out / "summary.json", json.dumps(summary, indent=2))
    write_atomically(out / "report.html", report_page(manifest, students, summary))
    log(summary_text(summary, out))
    return summary


def summary_text(summary: dict, out: Path | None = None, *, most: int = 12) -> str:
    """The class summary an instructor reads first: the five hardest gradients and who needs attention."""
    statuses = summary["statuses"]
    counts = " · ".join(f"{statuses[s]} {s}" for s in STATUSES if statuses.get(s))
    lines = [f"{summary['students']} students, {summary['submissions']} graded submissions"
             + (f", {summary['late']} late" if summary.get("late") else "") + (f": {counts}" if counts else "")]
    for exercise_id, data in summary["exercises"].items():
        lines.append(f"  {exercise_id}: {data['complete']}/{data['submissions']} complete, "
                     f"mean score {data['mean_score']:.1f}/{data['max_score']:g}")
    hardest = [row for row in summary["hardest"] if row["passing"] < row["graded"]][:5]
    if hardest:
        lines.append("\nhardest gradients:")
        for row in hardest:
            top = row["mistakes"][0] if row["mistakes"] else None
            said = f"   {top['count']} {printable(top['what'])}" if top else ""
            lines.append(f"  {row['exercise']} {row['gradient']:16} {row['passing']}/{row['graded']} pass{said}")
    needs = [item for item in summary["needs_attention"] if item["status"] != "missing"]
    missing = not_submitted(summary)
    if needs or missing:
        lines.append("\nneeds attention" + (f" ({len(needs)} files):" if needs else ":"))
        for item in needs[:most]:
            what = item["exercise"] or "file"
            lines.append(f"  {printable(item['student'])}  {what} {item['status']}: {printable(item['why'])[:100]}")
        if len(needs) > most:
            lines.append(f"  ... and {len(needs) - most} more in report.html")
        for exercise, names in missing.items():
            lines.append(f"  {exercise} not submitted by {len(names)}: " + ", ".join(printable(n) for n in names[:6])
                         + (" ..." if len(names) > 6 else ""))
    for key, title in (("unrecognised", "\nnot recognised"), ("unassigned", "not in the assignment, not graded"),
                       ("duplicates", "earlier attempts and duplicates not graded"),
                       ("skipped", "not read")):
        names = summary.get(key) or []
        if names:
            lines.append(f"{title} ({len(names)}): " + ", ".join(printable(name) for name in names[:10])
                         + (" ..." if len(names) > 10 else ""))
    if out is not None:
        lines.append(f"\nreport: {printable(str(out / 'report.html'))}")
    return "\n".join(lines)


def merge(parts: list[Path], out: Path, *, log=print) -> dict:
    """One class's outputs from its shards' output folders (each `grade batch --shard I/N`)."""
    manifests = []
    for part in parts:
        path = part / CLASS_FILE
        try:
            manifests.append(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise MergeError(f"{part} holds no {CLASS_FILE}: is it the --out folder of a `grade batch`?") from None
        except OSError as exc:
            raise MergeError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError:
            raise MergeError(f"{path} is not as this version of `grade batch` writes it: grade that shard again") from None
    if any(out.resolve() == part.resolve() or out.resolve().is_relative_to(part.resolve()) for part in parts):
        raise MergeError("--out must be a new folder outside the shards' folders")
    for part, manifest in zip(parts, manifests):
        if not well_formed(manifest):
            raise MergeError(f"{part / CLASS_FILE} is not as this version of `grade batch` writes it: "
                             f"grade that shard again")
        if manifest["shard"] is None:
            raise MergeError(f"{part} was graded without --shard: merge joins the outputs of "
                             f"`grade batch --shard I/N`, one for each I from 1 to N")
    whole = merged_manifest(manifests)
    version = whole["grader_version"]
    records, unfinished = {}, []
    for part, manifest in zip(parts, manifests):
        wanted = {(s["student"], s["exercise"], s["sha256"], version) for s in manifest["submissions"]}
        try:
            found = load_results(part / "results.jsonl")
        except OSError as exc:
            raise MergeError(f"cannot read {part / 'results.jsonl'}: {exc.strerror}") from None
        for record in found:
            if record_key(record) in wanted:
                records[record_key(record)] = record
        missing = len(wanted - set(records))
        if missing:
            unfinished.append(f"{part} lacks {missing}")
    if unfinished:
        raise MergeError("some submissions have no result yet (" + "; ".join(unfinished)
                         + "): run those shards' `grade batch` again to finish them")
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "results.jsonl", "".join(json.dumps(records[key], sort_keys=True) + "\n"
                                                    for key in sorted(records)))
    write_atomically(out / CLASS_FILE, json.dumps(whole, indent=1))
    return write_outputs(out, log=log)
