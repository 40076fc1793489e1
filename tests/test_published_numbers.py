"""The Results tables of README.md and docs/results.md print the numbers of the committed ``results.json`` files.

A table row whose first cell names an arm in backticks (`` `covariance` ``, the recipe's name in
``recipes/cifar10_cpu/``) is checked against ``docs/cifar10*/results.json`` (written by ``python -m train.results``):
its top-1 at the last epoch and its clustered shares, as ``mean ± std`` over the seeds (one decimal), or a bare
mean for one seed, must be those of one of the results.json files holding that arm. The seeds are the row's
``seeds`` cell, else the ``N seed(s)`` its label states, else 0, 1 and 2. Every arm of the peers' results.json has
a row in the README. Hand-copied numbers drift; this keeps them honest.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARM = re.compile(r"`(?P<arm>[a-z0-9_]+)`")
SEED_COUNT = re.compile(r"(?P<n>\d+) seeds?\b")
COLUMNS = {"top1": re.compile(r"^top-1 % \((epoch \d+|last epoch)\)$"),
           "clustered": re.compile(r"^clustered % \((epoch \d+|last epoch)\)$"),
           "clustered_initial": re.compile(r"^clustered % at init$"),
           "seeds": re.compile(r"^seeds$")}


def summaries() -> dict[str, list[dict]]:
    """arm -> its summaries, one per results.json that holds it (``default`` ran in two experiments)."""
    arms: dict[str, list[dict]] = {}
    for path in sorted((ROOT / "docs").glob("cifar10*/results.json")):
        for arm, summary in json.loads(path.read_text()).items():
            arms.setdefault(arm, []).append({**summary, "file": path.relative_to(ROOT)})
    return arms


def cells(line: str) -> list[str]:
    return [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]


def table_rows(doc: Path):
    """(line number, {column: cell}, label) of every row under a header that has a top-1 column."""
    header = None
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        if not line.startswith("|"):
            header = None
            continue
        row = cells(line)
        if header is None:
            header = {key: i for i, name in enumerate(row) for key, rule in COLUMNS.items() if rule.match(name)}
            header = header if "top1" in header else {}
        elif header and not set(line) <= set("|-: "):
            yield number, {key: row[i] for key, i in header.items()}, row[0]


def shown(pair, seeds: int, percent: bool) -> str:
    mean, std = (100 * v for v in pair) if percent else pair
    return f"{mean:.1f} ± {std:.1f}" if seeds > 1 else f"{mean:.1f}"


def row_problems(doc: Path, arms: dict[str, dict]) -> tuple[list[str], set[str]]:
    problems, seen = [], set()
    for number, row, label in table_rows(doc):
        named = ARM.search(label)
        if not named:
            continue
        where, arm = f"{doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc.name}:{number}", named["arm"]
        if arm not in arms:
            problems.append(f"{where}: arm `{arm}` is in no results.json; known: {sorted(arms)}")
            continue
        seen.add(arm)
        if "seeds" in row:
            stated = [int(s) for s in re.findall(r"\d+", row["seeds"])]
        else:
            count = SEED_COUNT.search(label)
            stated = list(range(int(count["n"]) if count else 3))
        mismatches = [summary_mismatch(row, arm, stated, summary) for summary in arms[arm]]
        if all(mismatches):   # the row must print one of the summaries exactly
            problems.append(f"{where}: " + "; or ".join(mismatches))
    return problems, seen


def summary_mismatch(row: dict[str, str], arm: str, stated: list[int], summary: dict) -> str | None:
    if stated != summary["seeds"]:
        return f"`{arm}` says seeds {stated}, {summary['file']} has {summary['seeds']}"
    expected = {"top1": shown(summary["top1"][-1], len(stated), percent=False),
                "clustered": shown(summary["clustered"], len(stated), percent=True),
                "clustered_initial": shown(summary["clustered_initial"], len(stated), percent=True)}
    wrong = [f"{key} is {cell!r}, {summary['file']} gives {expected[key]!r}"
             for key, cell in row.items() if key in expected and cell != expected[key]]
    return f"`{arm}` " + ", ".join(wrong) if wrong else None


@pytest.mark.parametrize("doc", ["README.md", "docs/results.md"])
def test_results_tables_print_the_committed_numbers(doc):
    arms = summaries()
    problems, seen = row_problems(ROOT / doc, arms)
    assert seen, f"{doc} has no results row naming an arm in backticks"
    assert not problems, "\n".join(problems)


def test_the_readme_shows_every_peer_arm():
    peers = json.loads((ROOT / "docs/cifar10_peers/results.json").read_text())
    _, seen = row_problems(ROOT / "README.md", summaries())
    assert set(peers) <= seen, f"README.md has no Results row for {sorted(set(peers) - seen)}"


def test_a_wrong_number_is_caught(tmp_path):
    arms = {"a": [{"seeds": [0, 1], "top1": [[70.04, 0.26]], "clustered": [0.5, 0.01],
                   "clustered_initial": [1.0, 0.0], "file": "x"}]}
    doc = tmp_path / "doc.md"
    doc.write_text("| arm | seeds | top-1 % (epoch 10) | clustered % at init | clustered % (epoch 10) |\n"
                   "|---|---|---|---|---|\n| `a` | 0, 1 | 70.0 ± 0.3 | 100.0 ± 0.0 | 50.0 ± 1.0 |\n"
                   "| `a` again | 0, 1 | 70.1 ± 0.3 | 100.0 ± 0.0 | 50.0 ± 1.0 |\n\n"
                   "| setting | top-1 % (last epoch) | clustered % (last epoch) |\n|---|---|---|\n"
                   "| `a`, 2 seeds | 70.0 ± 0.3 | 50.0 ± 1.0 |\n| `a`, 1 seed | 70.0 | 50.0 |\n"
                   "| `b` | 1.0 | 1.0 |\n", encoding="utf-8")
    problems, seen = row_problems(doc, arms)
    assert seen == {"a"} and len(problems) == 3, problems
    assert "70.1" in problems[0] and "seeds [0]" in problems[1] and "`b` is in no results.json" in problems[2]
