"""The end-of-run summary fits the terminal: one block per family, failing properties by name, never wider."""

from __future__ import annotations

from normbench.publish.terminal import summary_lines, write_matrix


def _outcome(impl: str, prop: str, verdict: str, family: str = "layernorm") -> dict:
    return {"family": family, "implementation": impl, "property": prop, "verdict": verdict, "mode": "any",
            "observed": "holds"}


OUTCOMES = [
    _outcome("torch.nn.LayerNorm", "forward_equivalence", "pass"),
    _outcome("torch.nn.LayerNorm", "weight_gradient_reduction", "xfail"),
    _outcome("a.very.long.implementation.name.that.goes.on.and.on.for.ever.LayerNorm", "shift_invariance", "fail"),
    *[_outcome("broken.many", f"property_number_{i:02d}", "fail" if i % 3 else "error") for i in range(30)],
    _outcome("torch.nn.RMSNorm", "forward_equivalence", "pass", family="rmsnorm"),
    _outcome("torch.nn.RMSNorm", "gradcheck", "unjudged", family="rmsnorm"),
]


def test_no_line_is_wider_than_the_terminal():
    for width in (60, 80, 120, 200):
        lines = summary_lines(OUTCOMES, width)
        assert max(map(len, lines)) <= width, (width, max(lines, key=len))


def test_one_block_per_family_with_verdicts_and_failing_properties():
    text = "\n".join(summary_lines(OUTCOMES, 120))
    assert text.splitlines()[0] == "layernorm" and "\nrmsnorm\n" in text
    # one known failure, said as one: a conforming verdict, marked, in the singular
    assert "conforms with 1 known failure " in text and "known failures" not in text.split("\nitems:")[0]
    assert "does not conform (30 failing)" in text and "property_number_29" in text and "property_number_00 (E)" in text
    assert "30 items: 20 judged, 10 errors (no verdict)" in text
    assert "not judged (1 of 2 items)" in text and "gradcheck (∅)" in text and "2 items: 1 judged, 1 not judged" in text
    assert "conforms" not in text.split("rmsnorm")[1].split("items:")[0]
    assert "1 item: 1 judged" in text and "1 items" not in text


def test_a_line_breaks_between_properties_never_inside_one():
    for width in (60, 80, 120):
        lines = summary_lines(OUTCOMES, width)
        assert not any(line.strip() == "(xf)" or line.strip() == "(E)" for line in lines), width
        assert not any(line.rstrip().endswith("(") for line in lines)


def test_the_full_matrix_goes_to_a_file(tmp_path):
    path = write_matrix(OUTCOMES, tmp_path / "m.txt")
    text = path.read_text()
    assert "broken.many" in text and "property_number_17" in text
