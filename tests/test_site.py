"""The static leaderboard site: pages per family and implementation, rendered from the records alone."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_results_leaderboard import outcome, records

from normbench.leaderboard import build_leaderboard, write_leaderboard
from normbench.publish import publish_all
from normbench.publish.site import family_page, implementation_page
from normbench.results import scan_records

ROOT = Path(__file__).resolve().parent.parent
ITEM = "layernorm[torch.nn.LayerNorm-weight_gradient_reduction-bfloat16]"


class Links(HTMLParser):
    """Every src/href of a page, and whether the tags balance enough for the parser to finish."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def refs(path: Path) -> list[str]:
    parser = Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.refs


@pytest.fixture(scope="module")
def committed_site(tmp_path_factory):
    """The site of the committed records (plots copied, not redrawn, to keep this quick)."""
    out = tmp_path_factory.mktemp("results")
    shutil.copytree(ROOT / "results" / "raw", out / "raw")
    shutil.copytree(ROOT / "results" / "plots", out / "plots")
    records, errors = scan_records(out)
    assert not errors
    publish_all(build_leaderboard(records), out, ["badges", "site"])
    return out / "site"


def test_index_has_a_card_per_family_and_links_resolve(committed_site):
    index = (committed_site / "index.html").read_text(encoding="utf-8")
    families = {p.stem.removeprefix("family-") for p in committed_site.glob("family-*.html")}
    assert {"layernorm", "rmsnorm", "batchnorm"} <= families
    assert set(re.findall(r'class="card" id="card-([^"]+)"', index)) == families
    for page in committed_site.glob("*.html"):
        for ref in refs(page):
            assert not re.match(r"[a-z]+://", ref), f"{page.name}: external reference {ref} (the site is offline)"
            target = (committed_site / ref.split("#")[0]).resolve()
            assert target.exists(), f"{page.name}: broken link {ref}"


def test_family_page_has_matrix_accuracy_performance_with_plots_and_machines(committed_site):
    page = committed_site / family_page("layernorm")
    html = page.read_text(encoding="utf-8")
    for heading in ("Conformance matrix on M1", "Accuracy against the float64 truth", "Performance: layernorm",
                    "Every item", "Machines"):
        assert heading in html
    assert "../plots/layernorm-cpu-amd-epyc-2c-3b99a731.png" in refs(page)
    # filters offer exactly the values the tables hold
    assert re.search(r'<select data-filter="dtype">.*bfloat16', html, re.S)
    assert 'data-variant="forward+backward"' in html and 'data-dtype="float16"' in html
    # numbers sort by value, not by their rounded text
    assert re.search(r'<td class="" data-sort="[-0-9.e+]+">', html)


def test_implementation_page_lists_failing_items_with_counterexample_and_repro(committed_site):
    page = (committed_site / implementation_page("torch.nn.LayerNorm")).read_text(encoding="utf-8")
    # torch's two items are declared known failures: said as such, not as failing
    assert "Failing items (0)" in page and "Known failures (2)" in page and ITEM in page
    assert "conforms with 2 known failures" in page and "<strong>known failure</strong>" in page
    assert f"normbench repro &#39;{ITEM}&#39;" in page  # shell-quoted, then HTML-escaped
    assert "&#34;rows_per_channel&#34;: 8192" in page
    assert "Known failure:" in page and "badges/torch.nn.LayerNorm.svg" in page
    conforming = (committed_site / implementation_page("reference.layernorm")).read_text(encoding="utf-8")
    assert "Failing items (0)" in conforming and "conforms" in conforming


def test_untrusted_text_is_escaped(tmp_path):
    hostile = outcome("<script>alert(1)</script>", "forward_equivalence", "fail", tol_ratio=3.0)
    hostile["summary"] = "<img src=x onerror=alert(1)>"
    conformance = records("m1")[0]
    conformance["outcomes"][hostile["test_id"]] = hostile
    publish_all(build_leaderboard([conformance]), tmp_path, ["site"])
    for page in (tmp_path / "site").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "<img src=x" not in text, page.name


def test_unjudged_and_multi_machine(tmp_path):
    first, second = records("m1"), records("m2", speed=2.0)
    first[0]["outcomes"]["layernorm[slow.correct-shift_invariance-float32]"] = outcome(
        "slow.correct", "shift_invariance", "unjudged")
    publish_all(build_leaderboard(first + second), tmp_path, ["badges", "site"])
    site = tmp_path / "site"
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "slow.correct</a>: <span class=\"verdict-unjudged\">not judged" in index
    page = (site / implementation_page("slow.correct")).read_text(encoding="utf-8")
    assert "Planned but not judged (1)" in page
    family = (site / family_page("layernorm")).read_text(encoding="utf-8")
    assert "Conformance matrix on M1" in family and "Conformance matrix on M2" in family
    assert "GB/s [M2]" in family


def test_write_leaderboard_writes_the_site_and_drops_stale_pages(tmp_path):
    from normbench.results import store_record

    for record in records("m1"):
        store_record(tmp_path, record)
    stale = tmp_path / "site" / "impl-gone.html"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    write_leaderboard(tmp_path, ["badges", "site"])
    assert (tmp_path / "site" / "index.html").exists() and (tmp_path / "site" / "static" / "site.js").exists()
    assert (tmp_path / "site" / "badges" / "fast.broken.svg").exists() and not stale.exists()
