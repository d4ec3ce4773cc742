"""The pages a newcomer reads (README.md, docs/*.md, bench/README.md) point where they say: every
relative link names a file (and an anchor a heading) that exists; docs/layout.md names every module
of the packages, and no module that is gone; docs/configuration.md has one row for each key of the
config schema, with its default. When a module is added, moved or renamed, these tests name it."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from conftest import ROOT

from recorderd.config import SCHEMA

PAGES = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *(ROOT / "docs").glob("*.md")])
PACKAGES = ("capture", "storage", "recorderd", "console", "pcap_fixtures", "bench")
LAYOUT = ROOT / "docs" / "layout.md"
PENDING = "(pending"  # a layout line for a module another change is adding: the integrator drops the mark
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _text(page: Path) -> str:
    return FENCE.sub("", page.read_text(encoding="utf-8"))  # links inside code blocks are code, not links


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"`", "", heading.strip()).lower()
    kept = "".join(c for c in heading if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(line.lstrip("#")) for line in _text(page).splitlines() if re.match(r"#{1,6} ", line)}


def test_every_relative_link_points_to_an_existing_file_and_heading() -> None:
    broken = []
    for page in PAGES:
        for match in LINK.finditer(_text(page)):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z]+:", target):  # https:, mailto:, file:
                continue
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in _anchors(where):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no heading #{anchor} in {where.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*"):
            if path.suffix in (".py", ".c") and "__pycache__" not in path.parts and path.is_file():
                found.add(path.relative_to(ROOT).as_posix())
    return found


def _named_in_layout() -> tuple[set[str], set[str]]:
    """(modules a line of docs/layout.md names, those of them marked as still being added)."""
    named, pending = set(), set()
    for line in LAYOUT.read_text(encoding="utf-8").splitlines():
        for name in re.findall(r"`((?:{})/[\w/]+\.(?:py|c))`".format("|".join(PACKAGES)), line):
            named.add(name)
            if PENDING in line:
                pending.add(name)
    return named, pending


def test_layout_names_every_module() -> None:
    named, _ = _named_in_layout()
    missing = sorted(_modules() - named)
    assert not missing, ("docs/layout.md has no line for these modules (add one each: `path`: what it is):\n"
                         + "\n".join(missing))


def test_layout_names_no_module_that_is_gone() -> None:
    named, pending = _named_in_layout()
    gone = sorted(n for n in named - pending if not (ROOT / n).is_file())
    assert not gone, ("docs/layout.md names modules that do not exist (moved or renamed? fix the line; a module "
                      f"still being added is marked {PENDING}):\n" + "\n".join(gone))


def _shown(default: Any) -> str:
    if default is None:
        return "(required)"
    if default == "":
        return "(off)"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, list):
        return "`[" + ", ".join(default) + "]`"
    return f"`{default}`"


def test_configuration_has_one_row_per_key_with_its_default() -> None:
    rows: dict[str, list[str]] = {}
    for line in (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows.setdefault(cells[0].strip("`"), []).append(cells[1])
    problems = [f"{key}: no row" for key in SCHEMA if key not in rows]
    problems += [f"{key}: {len(rows[key])} rows" for key in SCHEMA if len(rows.get(key, [])) > 1]
    problems += [f"{key}: a row, but no such key in recorderd/config.py" for key in rows if key not in SCHEMA]
    problems += [f"{key}: default {rows[key][0]}, the schema's is {_shown(default)}"
                 for key, (_, default) in SCHEMA.items() if key in rows and rows[key][0] != _shown(default)]
    assert not problems, "docs/configuration.md's table and recorderd/config.py differ:\n" + "\n".join(problems)


def test_readme_starts_with_the_two_commands() -> None:
    """A newcomer's first lines: ``make run`` and ``make test``, before anything else."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = text.split("```", 2)[1]
    assert text.index("```") < 40 and "make run" in first_block and "make test" in first_block
