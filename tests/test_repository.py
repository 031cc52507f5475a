"""The repository stands on its own: every cited document exists, with the cited section,
and nothing reads from outside the checkout.

Code comments cite our notes by path and section (`docs/references.md §1`, see
docs/architecture.md for the layout); a citation of a file that a fresh clone does not
have, or of a section the file lacks, is a dead reference. The openpi fixture lives in
tests/fixtures/, so no code may point beside the checkout either.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Build outputs and local state, not sources (.gitignore); hidden folders except .ci/.
SKIP_ROOT_DIRS = {"runs", "data", "wandb"}
SKIP_DIRS = {"__pycache__", "node_modules"}
# Not scanned for citations: third-party text kept verbatim (the openpi fixture's own
# README), and this file, whose examples of dead citations are deliberate.
SKIP_FILES = {
    Path("tests/fixtures/openpi_pi05_tiny_a/README.md"),
    Path(__file__).resolve().relative_to(ROOT),
}

# A cited Markdown file: a path or bare name ending in .md, not part of a longer path or
# URL; then optionally `§N[.M...]` (after spaces, a line break or a comment's `#`), then
# optionally a quoted heading name ("Data conventions").
CITATION = re.compile(
    r"(?<![\w/.:-])(?P<path>(?:[\w.-]+/)*[\w-][\w.-]*\.md)\b"
    r"(?:[ \t]*\n?[ \t#*]*§[ \t]*(?P<section>\d+(?:\.\d+)*))?"
    r"(?:[ \t]+\"(?P<heading>[A-Za-z][^\"\n]{0,60})\")?"
)
# A section reference inside a document with no file name before it: the same document.
SELF_SECTION = re.compile(r"(?<![\w.])§[ \t]*(?P<section>\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
HEADING_NUMBER = re.compile(r"^(?:§[ \t]*)?(?P<number>\d+(?:\.\d+)*)[.)]?(?:\s|$)")


@dataclass(frozen=True)
class Citation:
    source: Path  # citing file, relative to ROOT
    line: int
    path: str  # as written
    section: str | None
    heading: str | None

    def __str__(self) -> str:
        cited = self.path + (f" §{self.section}" if self.section else "")
        cited += f' "{self.heading}"' if self.heading else ""
        return f"{self.source}:{self.line}: {cited}"


def repository_files() -> list[Path]:
    """Every file of the working tree that a clone has (relative to ROOT)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = Path(dirpath).relative_to(ROOT)
        dirnames[:] = [
            d
            for d in dirnames
            if not (d.startswith(".") and d != ".ci")
            and d not in SKIP_DIRS
            and not d.endswith(".egg-info")
            and not (rel == Path(".") and d in SKIP_ROOT_DIRS)
        ]
        found += [rel / f for f in filenames]
    return sorted(found)


def citing_files(files: list[Path]) -> list[Path]:
    """Where citations live: Python sources, the README, reports and our docs."""
    return [
        f
        for f in files
        if f not in SKIP_FILES
        and (
            f.suffix == ".py"
            or f == Path("README.md")
            or (f.suffix == ".md" and f.parent in (Path("reports"), Path("docs")))
        )
    ]


def find_citations(text: str, source: Path) -> list[Citation]:
    out = []
    for m in CITATION.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out.append(Citation(source, line, m["path"], m["section"], m["heading"]))
    if source.suffix == ".md" and source.parent == Path("docs"):
        cited_spans = [m.span() for m in CITATION.finditer(text)]
        for m in SELF_SECTION.finditer(text):
            if any(a <= m.start() < b for a, b in cited_spans):
                continue  # the section of a named file, handled above
            line = text.count("\n", 0, m.start()) + 1
            out.append(Citation(source, line, source.name, m["section"], None))
    return out


def resolve(c: Citation, files: list[Path]) -> Path | None:
    """The cited file in the repository: relative to the root or to the citing file; a bare
    name may also be any file of that name (one outside docs/, see `check`)."""
    for base in (Path("."), c.source.parent):
        target = Path(os.path.normpath(base / c.path))
        if target in files:
            return target
    if "/" not in c.path:
        same_name = [f for f in files if f.name == c.path]
        if same_name:
            return same_name[0]
    return None


def sections(doc: str) -> tuple[set[str], list[str]]:
    """(section numbers, heading titles) of a Markdown document."""
    titles = [m["title"] for m in HEADING.finditer(doc)]
    numbers = {n["number"] for t in titles if (n := HEADING_NUMBER.match(t))}
    return numbers, titles


def check(c: Citation, files: list[Path]) -> str | None:
    """None when the citation resolves, else why it does not."""
    target = resolve(c, files)
    if target is None:
        return f"{c}: no such file in the repository"
    if target.parent == Path("docs") and c.source.parent != Path("docs") and "/" not in c.path:
        return f"{c}: cite it by its path, {target.as_posix()}"
    numbers, titles = sections((ROOT / target).read_text(encoding="utf-8"))
    if c.section is not None and c.section not in numbers:
        return f"{c}: {target.as_posix()} has no heading numbered {c.section} ({sorted(numbers)})"
    if c.heading is not None and not any(c.heading.lower() in t.lower() for t in titles):
        return f'{c}: {target.as_posix()} has no heading containing "{c.heading}"'
    return None


def all_citations(files: list[Path]) -> list[Citation]:
    return [
        c
        for f in citing_files(files)
        for c in find_citations((ROOT / f).read_text(encoding="utf-8"), f)
    ]


def test_citation_parser_reads_every_form():
    text = (
        "LightVLA (docs/references.md §2), as docs/problem.md\n"
        '# §2.2 says; see docs/references.md §1 "Fine-tuning recipe" and\n'
        'README.md, not https://example.org/x/README.md or docs/problem.mdx "Q".'
    )
    got = [(c.path, c.section, c.heading, c.line) for c in find_citations(text, Path("a.py"))]
    assert got == [
        ("docs/references.md", "2", None, 1),
        ("docs/problem.md", "2.2", None, 1),
        ("docs/references.md", "1", "Fine-tuning recipe", 2),
        ("README.md", None, None, 3),
    ]


def test_dead_citations_are_reported():
    files = repository_files()
    cases = {
        "docs/nowhere.md": "no such file",
        "docs/references.md §99": "no heading numbered 99",
        'docs/references.md "No such heading"': "no heading containing",
        "references.md §1": "cite it by its path",
        "../docs/references.md": "no such file",  # outside the checkout
    }
    for text, expected in cases.items():
        (c,) = find_citations(text, Path("x.py"))
        problem = check(c, files)
        assert problem is not None and expected in problem, (text, problem)
    (ok,) = find_citations('docs/references.md §1 "Data conventions"', Path("policies/x.py"))
    assert check(ok, files) is None


def test_every_cited_document_and_section_exists():
    files = repository_files()
    citations = all_citations(files)
    # The code cites the docs dozens of times: finding few means the scanner broke.
    assert sum(c.path.startswith("docs/") for c in citations) >= 30, len(citations)
    problems = [p for c in citations if (p := check(c, files)) is not None]
    assert not problems, "dead citations:\n" + "\n".join(problems)


# Split so that this file does not match itself.
OUTSIDE = ("../" + "shared", "shared/" + "fixtures")


def test_nothing_reads_beside_the_checkout():
    files = repository_files()
    checked = [
        f
        for f in files
        if f.suffix == ".py" or f.name == "Makefile" or (f.parts and f.parts[0] == ".ci")
    ]
    assert Path("Makefile") in checked and any(f.parts[0] == ".ci" for f in checked)
    hits = [
        f"{f}:{n}: {line.strip()}"
        for f in checked
        for n, line in enumerate(
            (ROOT / f).read_text(encoding="utf-8", errors="replace").splitlines(), 1
        )
        if any(s in line for s in OUTSIDE)
    ]
    assert not hits, "paths outside the repository:\n" + "\n".join(hits)


@pytest.mark.parametrize("name", ["openpi_pi05_tiny_a/config.json", "openpi_pi05_keys.txt"])
def test_openpi_fixture_is_committed_in_tests(name):
    assert (ROOT / "tests/fixtures" / name).is_file()
