"""The documentation: `mkdocs build --strict` passes (strict fails on a broken link or anchor between the pages of
docs/), every relative link of README.md reaches a file, and every registered check has its row in the docs.

The mkdocs test skips, saying why, only where mkdocs is not installed (it is in the dev extra, which CI installs).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from normbench.checks import CHECKS
from normbench.implementation import Implementation

ROOT = Path(__file__).resolve().parent.parent
HAS_MKDOCS = importlib.util.find_spec("mkdocs") is not None
needs_mkdocs = pytest.mark.skipif(not HAS_MKDOCS, reason="mkdocs is not installed (pip install -e '.[dev]')")

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE = re.compile(r"`[^`]*`")  # a code span may wrap onto the next line
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(markdown: str) -> list[str]:
    """The link targets of a markdown text that name a file of the tree (no scheme, no bare #anchor), outside code."""
    text = _CODE.sub("", _FENCE.sub("", markdown))
    targets = [m.group(1) for m in _LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def unresolved_links(path: Path) -> list[str]:
    """The relative links of the markdown file `path` whose file does not exist beside it."""
    return [t for t in relative_links(path.read_text(encoding="utf-8"))
            if not (path.parent / t.split("#", 1)[0]).exists()]


def undocumented(docs: str, names: list[str]) -> list[str]:
    """The names that begin no table row of the docs text (a row's first cell holds `name`, alone or with others)."""
    return [n for n in names if not re.search(rf"^\|[^|\n]*`{re.escape(n)}`[^|\n]*\|", docs, re.M)]


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    # never -q: strict mode counts the warnings its log emits, and -q silences them into a passing build
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], capture_output=True, text=True, timeout=120)


def test_every_relative_link_of_the_readme_reaches_a_file():
    readme = ROOT / "README.md"
    assert not unresolved_links(readme), f"README.md links to missing files: {unresolved_links(readme)}"
    assert any(t.startswith("docs/") for t in relative_links(readme.read_text(encoding="utf-8"))), \
        "README.md links to no page of docs/"


def test_the_link_checker_flags_a_missing_file_and_passes_a_present_one(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# here\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/here.md#here) [web](https://example.org/x.md) [self](#top) `[code](gone.md)`\n"
                    "```\n[fenced](gone2.md)\n```\n`a span that\nwraps [grid](...)`\n[broken](docs/gone.md)\n")
    assert unresolved_links(page) == ["docs/gone.md"]


def test_every_registered_check_has_a_row_in_the_docs():
    docs = "\n".join((ROOT / "docs" / name).read_text(encoding="utf-8") for name in ("properties.md", "variants.md"))
    missing = undocumented(docs, sorted(CHECKS))
    assert not missing, f"checks with no row in docs/properties.md or docs/variants.md: {missing}"


def test_every_implementation_field_a_plugin_sets_has_a_row_in_the_plugin_page():
    required_or_not_a_plugins = ("name", "family", "factory", "source")
    fields = [f.name for f in dataclasses.fields(Implementation) if f.name not in required_or_not_a_plugins]
    missing = undocumented((ROOT / "docs" / "plugins.md").read_text(encoding="utf-8"), fields)
    assert not missing, f"Implementation fields with no row in docs/plugins.md: {missing}"


def test_the_row_rule_flags_a_missing_row_and_one_named_only_in_prose():
    docs = ("| property | what |\n|---|---|\n| `forward_equivalence` | output vs the truth |\n"
            "| `ranks`, `hidden_multiple` | declared shapes |\n| `other` | unlike `gradcheck` |\nsee `gradcheck`\n")
    assert undocumented(docs, ["forward_equivalence", "ranks", "hidden_multiple", "gradcheck"]) == ["gradcheck"]


@needs_mkdocs
def test_mkdocs_builds_the_docs_strictly(tmp_path):
    proc = mkdocs_build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "architecture.html" in index and "normbench" in index
    # no CDN: the pages open from disk without a network, as the leaderboard site does
    assert not re.findall(r'(?:src|href)="https?://[^"]+\.(?:js|css)', index)


@needs_mkdocs
def test_mkdocs_strict_fails_on_a_broken_link_between_pages(tmp_path):
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "families.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [nowhere](no-such-page.md).\n", encoding="utf-8")
    proc = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-page.md" in proc.stdout + proc.stderr
