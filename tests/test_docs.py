"""The documentation says what is true (that the layers install and import apart: test_layers.py).

* Every ``--flag`` written in README.md and docs/*.md (code spans and fenced blocks) exists in the ``--help`` of the
  command it belongs to: the nearest ``python -m train[.X]``, ``python -m analysis SUB``, ``python -m dog_init SUB``
  or ``python benchmarks/X.py`` before it on the same line of a block, in the same code span, or else in an earlier
  span of the same paragraph; a flag with no command there must exist in some documented command's help. Flags after
  another program (``accelerate launch``, ``torchrun``, ``tensorboard``, ``pip``, ...) are that program's and are not
  checked. Trainer keys (``--optim.lr``, and ``optim.lr`` written alone in a span) must be fields of
  ``train.config.SECTIONS``. Each ``--help`` runs once.
* Every repository path they name (``recipes/``, ``docs/``, ``tests/``, ``benchmarks/``, ``dog_init/``,
  ``analysis/``, ``train/``; braces and globs expanded), every relative link (and its ``#anchor``) and every
  ``make X`` target exists. Paths with placeholders (``/path/to``, ``OUTPUT``, ``RUN``, ``NAME``, ``...``, ``<x>``)
  and the outputs of ``--out`` / ``--output-dir`` / ``--report`` / ``--preview`` / ``--csv`` are skipped.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "COLUMNS": "200", "PYTHONWARNINGS": "ignore"}

PATH_PREFIXES = ("recipes/", "docs/", "tests/", "benchmarks/", "dog_init/", "analysis/", "train/")
OUTPUT_FLAGS = {"--out", "--output-dir", "--report", "--preview", "--csv"}
PLACEHOLDER = re.compile(r"/path/to|\bOUTPUT\b|\bRUN\b|\.\.\.|<|>|(^|/)[A-Z][A-Z0-9_]*(\.\w+)?(/|$)")
SUBCOMMAND_MODULES = ("analysis", "dog_init")

# Our commands: python -m train[.x] / analysis[.x] [sub] / dog_init [sub] (also `-m train` after a launcher), and
# python benchmarks/X.py. Foreign programs: their flags are theirs.
OURS = re.compile(
    r"(?:(?:\$\(PY\)|[\w./-]*python3?)\s+|(?<![\w-]))-m\s+(?P<mod>(?:train|analysis|dog_init)(?:\.\w+)*)"
    r"(?:\s+(?P<sub>[a-z_]+(?:\|[a-z_]+)*)(?![\w./-]))?"
    r"|(?:[\w./-]*python3?)\s+(?P<bench>benchmarks/\w+\.py)")
FOREIGN = re.compile(r"(?<![\w./-])(?:accelerate\s+launch|torchrun|tensorboard|pip3?\s+install|pytest|bash|git|"
                     r"[\w./-]*python3?\s+-m\s+(?!train\b|analysis\b|dog_init\b)\w+|make)(?![\w-])")
FLAG = re.compile(r"(?<![\w-])--(?P<name>[a-z][a-z0-9_-]*(?:\.[a-z_][a-z0-9_]*)?)")
SECTION_KEY = re.compile(r"(?<![\w./-])(?P<section>model|init|data|augment|optim|schedule|train|tracking)"
                         r"\.(?P<key>[a-z_][a-z0-9_]*)(?![\w.(-])")
FILE_SUFFIXES = {"safetensors", "yaml", "json", "jsonl", "py", "png", "pth", "pt", "npy", "npz", "csv", "md", "txt"}
MAKE = re.compile(r"(?<![\w$(-])make\s+(?P<target>[\w./-]+)")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
SPAN = re.compile(r"(?<!`)(`+)(?!`)(?P<code>.+?)(?<!`)\1(?!`)", re.S)


@dataclasses.dataclass
class Unit:
    """One piece of code: a logical line of a fenced block, or an inline code span (with its paragraph)."""
    doc: Path
    line: int
    text: str
    paragraph: int | None = None      # spans: index of their paragraph, to find a command in an earlier span
    block_lang: str | None = None     # fenced blocks: the info string

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def _strip_comment(line: str) -> str:
    return re.sub(r"(^|\s)#.*$", "", line)


def parse(doc: Path) -> tuple[list[Unit], list[tuple[int, str]], list[str]]:
    """(code units, (line, link target) pairs, heading texts) of one markdown file."""
    units, links, headings = [], [], []
    lines = doc.read_text(encoding="utf-8").splitlines()
    prose: list[tuple[int, str]] = []          # (line number, text) outside fences, blank lines kept
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*(\S*)", lines[i])
        if not fence:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        lang, start, body = fence.group(2), i + 1, []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        logical, first = "", None
        for number, text in body:
            if lang in ("bash", "sh", "shell", "console", ""):
                text = _strip_comment(text)
            first = number if first is None else first
            if text.rstrip().endswith("\\"):
                logical += text.rstrip()[:-1] + " "
                continue
            units.append(Unit(doc, first, logical + text, block_lang=lang))
            logical, first = "", None
        if logical:
            units.append(Unit(doc, first, logical, block_lang=lang))
    # Paragraphs of prose: runs of non-blank lines.
    for paragraph, group in enumerate(itertools.groupby(prose, key=lambda item: bool(item[1].strip()))):
        is_text, items = group
        if not is_text:
            continue
        items = list(items)
        text = "\n".join(t for _, t in items)
        starts = [0]
        for _, t in items:
            starts.append(starts[-1] + len(t) + 1)
        line_of = lambda offset: items[max(k for k, s in enumerate(starts[:-1]) if s <= offset)][0]  # noqa: E731
        for _, t in items:
            if re.match(r"^#{1,6}\s", t):
                headings.append(re.sub(r"^#{1,6}\s+", "", t).strip())
        for m in LINK.finditer(SPAN.sub(lambda s: " " * len(s.group(0)), text)):
            links.append((line_of(m.start()), m.group("target")))
        for m in SPAN.finditer(text):
            units.append(Unit(doc, line_of(m.start()), m.group("code").replace("\n", " "), paragraph=paragraph))
    return units, links, headings


@functools.lru_cache(maxsize=None)
def parsed(doc: Path):
    return parse(doc)


# --- commands and their --help ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def help_text(command: tuple[str, ...]) -> tuple[int, str]:
    """(exit status, output) of ``command --help``, run once per command."""
    if command[0].startswith("benchmarks/"):
        argv = [sys.executable, command[0], *command[1:], "--help"]
    else:
        argv = [sys.executable, "-m", *command, "--help"]
    try:
        done = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return done.returncode, done.stdout + done.stderr


def help_flags(command: tuple[str, ...]) -> set[str] | None:
    status, text = help_text(command)
    return set(re.findall(r"(?<![\w-])--[a-z](?:[\w.-]*[a-z0-9_])?", text)) if status == 0 else None


def subcommands(module: str) -> set[str]:
    status, text = help_text((module,))
    found = re.search(r"\{([\w,]+)\}", text) if status == 0 else None
    return set(found.group(1).split(",")) if found else set()


def commands_in(text: str) -> list[tuple[int, int, tuple[tuple[str, ...], ...] | None]]:
    """(start, end, commands) of every command in ``text``; commands None for a foreign program. A ``sub`` such as
    ``report|classify`` gives several commands, any of which may own a flag."""
    found = []
    for m in OURS.finditer(text):
        if m.group("bench"):
            found.append((m.start(), m.end(), ((m.group("bench"),),)))
            continue
        module, sub = m.group("mod"), m.group("sub")
        end = m.end()
        if module in SUBCOMMAND_MODULES and sub and set(sub.split("|")) <= subcommands(module):
            found.append((m.start(), end, tuple((module, s) for s in sub.split("|"))))
        else:
            found.append((m.start(), m.end("mod"), ((module,),)))
    taken = [(s, e) for s, e, _ in found]
    for m in FOREIGN.finditer(text):
        if not any(s <= m.start() < e or s <= m.end() - 1 < e for s, e in taken):
            found.append((m.start(), m.end(), None))
    return sorted(found)


@functools.lru_cache(maxsize=None)
def trainer_keys() -> dict[str, set[str]]:
    from train.config import SECTIONS
    return {section: {f.name for f in dataclasses.fields(cls)} for section, cls in SECTIONS.items()}


def check_trainer_key(section: str, key: str) -> str | None:
    keys = trainer_keys()
    if section not in keys:
        return f"no configuration section {section!r} (sections: {', '.join(keys)})"
    if key not in keys[section]:
        return f"no key {key!r} in configuration section {section!r}"
    return None


def all_units():
    for doc in DOCS:
        yield from parsed(doc)[0]


@functools.lru_cache(maxsize=None)
def documented_commands() -> tuple[tuple[str, ...], ...]:
    found = set()
    for unit in all_units():
        for _, _, commands in commands_in(unit.text):
            if commands:
                found.update(commands)
    return tuple(sorted(found))


def flag_owner(unit: Unit, position: int, previous_spans: list[Unit]):
    """The commands owning the flag at ``position`` of ``unit``: a tuple, None for a foreign program, "any" when no
    command is named nearby."""
    before = [c for c in commands_in(unit.text) if c[0] < position]
    if before:
        return before[-1][2]
    for span in reversed(previous_spans):
        commands = commands_in(span.text)
        if commands:
            return commands[-1][2]
    return "any"


def flag_problem(flag: str, owners) -> str | None:
    if owners is None:
        return None
    candidates = documented_commands() if owners == "any" else owners
    for command in candidates:
        if command == ("train",) and "." in flag:
            section, key = flag[2:].split(".", 1)
            if check_trainer_key(section, key) is None:
                return None
            continue
        flags = help_flags(command)
        if flags is not None and flag in flags:
            return None
    if owners != "any":
        failed = [c for c in owners if help_flags(c) is None]
        if failed:
            return f"{flag}: `{_show(failed[0])} --help` failed: {help_text(failed[0])[1].strip()[-300:]}"
        if owners == (("train",),) and "." in flag:
            return f"{flag}: {check_trainer_key(*flag[2:].split('.', 1))}"
        return f"{flag} is not an option of `{' | '.join(_show(c) for c in owners)}`"
    return f"{flag} is not an option of any documented command"


def _show(command: tuple[str, ...]) -> str:
    return f"python {command[0]}" if command[0].startswith("benchmarks/") else f"python -m {' '.join(command)}"


@pytest.mark.slow
def test_documented_flags_exist():
    problems = []
    for doc in DOCS:
        units = parsed(doc)[0]
        for index, unit in enumerate(units):
            if unit.block_lang in ("python", "py", "json", "yaml"):
                continue
            previous = [u for u in units[:index] if u.paragraph is not None and u.paragraph == unit.paragraph]
            for m in FLAG.finditer(unit.text):
                flag = "--" + m.group("name").rstrip(".-")
                problem = flag_problem(flag, flag_owner(unit, m.start(), previous))
                if problem:
                    problems.append(f"{unit.where}: {problem}")
            if unit.paragraph is not None:      # trainer keys written alone: `optim.lr`, `train.ema: true`
                for m in SECTION_KEY.finditer(unit.text):
                    section, key = m.group("section"), m.group("key")
                    if key in FILE_SUFFIXES or (section == "train" and ((ROOT / "train" / key).exists()
                                                                        or (ROOT / "train" / f"{key}.py").exists())):
                        continue
                    if m.start() >= 2 and unit.text[m.start() - 2:m.start()] == "--":
                        continue
                    problem = check_trainer_key(section, key)
                    if problem:
                        problems.append(f"{unit.where}: {section}.{key}: {problem}")
    assert not problems, "documented options that do not exist:\n" + "\n".join(sorted(set(problems)))


# --- paths, links, make targets --------------------------------------------------------------------------------

def expand_braces(path: str) -> list[str]:
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [p for option in m.group(1).split(",") for p in expand_braces(path[:m.start()] + option + path[m.end():])]


def path_problem(path: str) -> str | None:
    for candidate in expand_braces(path):
        if any(ch in candidate for ch in "*?["):
            if not glob.glob(str(ROOT / candidate)):
                return f"{candidate}: matches no file"
        elif candidate.endswith("/"):
            if not (ROOT / candidate).is_dir():
                return f"{candidate}: no such folder"
        elif not (ROOT / candidate).exists():
            return f"{candidate}: no such file"
    return None


def repo_paths(text: str) -> list[str]:
    """Tokens of ``text`` that name repository paths, minus placeholders and outputs."""
    tokens = re.findall(r"(?:[^\s'\"(),;=`{]|\{[^{}\s]*\})+", text)
    found = []
    for previous, token in zip([""] + tokens, tokens):
        token = token.removeprefix("./").rstrip(".:;")
        if not token.startswith(PATH_PREFIXES) or previous in OUTPUT_FLAGS or PLACEHOLDER.search(token):
            continue
        found.append(token)
    return found


@functools.lru_cache(maxsize=None)
def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([^\s#:=][^:=]*?)\s*:(?!=)", line)
        if m:
            targets.update(t for t in m.group(1).split() if "$" not in t and "%" not in t)
    return targets


def slug(heading: str) -> str:
    text = re.sub(r"[`*_]", lambda m: "_" if m.group(0) == "_" else "", heading.strip().lower())
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_documented_paths_links_and_targets_exist():
    problems = []
    for doc in DOCS:
        units, links, _ = parsed(doc)
        for unit in units:
            for path in repo_paths(unit.text):
                problem = path_problem(path)
                if problem:
                    problems.append(f"{unit.where}: {problem}")
            if unit.block_lang not in ("python", "py"):
                for m in MAKE.finditer(unit.text):
                    if m.group("target") not in make_targets():
                        problems.append(f"{unit.where}: `make {m.group('target')}`: no such Makefile target")
        for line, target in links:
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            resolved = (doc.parent / file).resolve() if file else doc
            where = f"{doc.relative_to(ROOT)}:{line}"
            if not resolved.exists():
                problems.append(f"{where}: link {target}: no such file")
            elif anchor and resolved.suffix == ".md":
                anchors = {slug(h) for h in parse(resolved)[2]}
                if anchor not in anchors:
                    problems.append(f"{where}: link {target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not problems, "documented paths, links or make targets that do not exist:\n" + "\n".join(problems)


def test_readme_is_short():
    words = len((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert words <= 1500, f"README.md has {words} words; keep it under 1,500 and move reference material to docs/"


def test_the_parser_finds_what_it_should():
    """The checks above see flags, owners, paths and targets where the documentation writes them."""
    doc = ROOT / "README.md"
    unit = Unit(doc, 1, "accelerate launch --multi_gpu -m train --config recipes/demo.yaml --optim.lr 0.1")
    assert [c[2] for c in commands_in(unit.text)] == [None, (("train",),)]
    assert flag_owner(unit, unit.text.index("--multi_gpu"), []) is None
    assert flag_owner(unit, unit.text.index("--optim.lr"), []) == (("train",),)
    assert repo_paths(unit.text) == ["recipes/demo.yaml"]
    assert repo_paths("python -m train.results a=x --out docs/mine") == []
    assert repo_paths("OUTPUT/model.safetensors docs/cifar10/ benchmarks/NAME.py") == ["docs/cifar10/"]
    assert expand_braces("recipes/a/{b,c}.yaml") == ["recipes/a/b.yaml", "recipes/a/c.yaml"]
    assert [c[2] for c in commands_in("python -m analysis report --out x; python benchmarks/fit.py --n 3")] == [
        (("analysis", "report"),), (("benchmarks/fit.py",),)]
    assert flag_problem("--optim.no_such_key", (("train",),))
    assert flag_problem("--no-such-flag", (("analysis", "report"),))
    assert flag_problem("--out", (("analysis", "report"),)) is None
    assert slug("`analysis.fit_families`: which DoG each kernel is") == "analysisfit_families-which-dog-each-kernel-is"
