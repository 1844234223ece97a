"""The decisions the code cites live in the repository: every "decision N" in the code, tests,
benchmarks and docs is a section of docs/decisions.md, and nothing cites the spec folder a
clone does not have ("spec 4.5", "../shared/spec")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DECISIONS = ROOT / "docs" / "decisions.md"
CITING = ("src", "tests", "benchmarks", "examples", "docs")
CITATION = re.compile(r"\b[Dd]ecisions? (\d+)((?:(?:, | and | or )\d+)*)")
SPEC = re.compile(r"\b[Ss]pec (\d+\.\d+|\d+\b)|shared/spec|sagemaker-knn\.md")


def texts() -> dict[str, str]:
    files = [ROOT / "README.md", *(p for d in CITING for p in sorted((ROOT / d).rglob("*"))
                                   if p.suffix in (".py", ".md", ".sh", ".ipynb"))]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files
            if p != Path(__file__).resolve()}


def numbers() -> set[int]:
    return {int(n) for n in re.findall(r"^## (\d+)\. ", DECISIONS.read_text(), re.MULTILINE)}


def test_decisions_are_numbered_from_one_without_gaps() -> None:
    found = numbers()
    assert found and found == set(range(1, max(found) + 1))


def test_every_cited_decision_exists() -> None:
    known, missing = numbers(), []
    for name, text in texts().items():
        for match in CITATION.finditer(text):
            cited = [int(match.group(1)), *map(int, re.findall(r"\d+", match.group(2)))]
            missing += [f"{name}: decision {n}" for n in cited if n not in known]
    assert missing == []


def test_nothing_cites_the_spec_folder() -> None:
    cites = [f"{name}: {m.group(0)!r}" for name, text in texts().items()
             for m in SPEC.finditer(text)]
    assert cites == []


def module_map() -> set[str]:
    """The files README.md's module map names, as paths under src/openknn."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Module map", 1)[1].split("```", 2)[1]
    named, folder = set(), ""
    for line in block.splitlines()[2:]:  # after the opening fence's language and src/openknn/
        indent = len(line) - len(line.lstrip())
        first = line.split()[0] if line.strip() else ""
        if indent == 2:
            folder = first if first.endswith("/") else ""
            tokens = re.findall(r"\b\w+\.py\b", line if folder else line.split(None, 1)[0])
        else:
            tokens = re.findall(r"\b\w+\.py\b", line)
        named.update(folder + token for token in tokens)
    return named


def test_the_module_map_and_the_tree_agree() -> None:
    src = ROOT / "src" / "openknn"
    tree = {str(p.relative_to(src)) for p in src.rglob("*.py")
            if p.name != "__init__.py" or p.parent == src}
    assert module_map() == tree
