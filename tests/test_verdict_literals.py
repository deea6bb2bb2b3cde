"""No module of normbench compares or assigns a verdict as a string literal: verdicts are normbench.verdicts.Verdict
members everywhere but in verdicts.py itself and the record (de)serializer (normbench/outcome.py), so a renamed or
misspelled verdict is a NameError at import, not a comparison that is silently never true.

What counts as a verdict: an expression whose name says so (``verdict``, ``x.verdict``, ``o["verdict"]``,
``o.get("verdict")``), compared with (``==``, ``!=``, ``in``, ``not in``) or assigned (``=``, a ``verdict=`` keyword,
a ``{"verdict": ...}`` entry) a string that is a verdict's value. Other strings that happen to spell one ("error" as a
wire message's kind, "report" as a spec's expectation, a benchmark's "pass" field) are not verdicts and are left
alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

from normbench.verdicts import Verdict

PACKAGE = Path(__file__).resolve().parent.parent / "normbench"
#: the modules that spell verdicts as strings by design: the vocabulary and the record (de)serializer
EXEMPT = ("verdicts.py", "outcome.py")
VALUES = frozenset(v.value for v in Verdict)


def _is_verdict(node: ast.AST) -> bool:
    """Whether an expression's own name says it holds a verdict."""
    if isinstance(node, ast.Name):
        return "verdict" in node.id.lower()
    if isinstance(node, ast.Attribute):
        return "verdict" in node.attr.lower()
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "verdict"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "verdict"
    return False


def _literals(node: ast.AST | None) -> list[str]:
    """The verdict values a literal spells: a string, or the strings of a tuple / list / set literal."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in VALUES:
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [v for e in node.elts for v in _literals(e)]
    return []


def _pairs(targets: list[ast.expr], value: ast.expr | None) -> list[tuple[ast.expr, ast.expr | None]]:
    """(target, value) of an assignment, a tuple assigned from a tuple taken element by element."""
    pairs: list[tuple[ast.expr, ast.expr | None]] = []
    for target in targets:
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and len(target.elts) == len(value.elts):
            pairs += list(zip(target.elts, value.elts, strict=True))
        else:
            pairs.append((target, value))
    return pairs


def verdict_literals(source: str, filename: str = "<source>") -> list[str]:
    """'file:line: what' for every verdict string literal compared with or assigned to a verdict in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        spelled: list[str] = []
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_verdict(o) for o in operands):
                spelled = [v for o in operands for v in _literals(o)]
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            spelled = [v for t, value in _pairs(targets, node.value) if _is_verdict(t) for v in _literals(value)]
        elif isinstance(node, ast.keyword) and node.arg is not None and "verdict" in node.arg.lower():
            spelled = _literals(node.value)
        elif isinstance(node, ast.Dict):
            spelled = [v for k, value in zip(node.keys, node.values, strict=True)
                       if isinstance(k, ast.Constant) and k.value == "verdict" for v in _literals(value)]
        if spelled:
            found.append(f"{filename}:{getattr(node, 'lineno', '?')}: verdict {spelled[0]!r} as a string literal "
                         f"(use Verdict.{Verdict(spelled[0]).name})")
    return found


def scan(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() in EXEMPT:
            continue
        found += verdict_literals(path.read_text(), str(path.relative_to(package.parent)))
    return found


def test_no_module_of_normbench_spells_a_verdict_as_a_string() -> None:
    assert scan(PACKAGE) == []


PLANTED = '''
def judge(outcome, reply, verdict):
    if outcome["verdict"] == "fail":
        pass
    if reply.get("verdict") in ("pass", "xfail"):
        pass
    if "skip" != outcome.verdict:
        pass
    outcome.verdict = "error"
    verdict = "report"
    outcome["verdict"] = "unjudged"
    outcome.verdict, observed = "error", None
    fields = {"verdict": "error", "summary": ""}
    outcome.update(verdict="skip")
'''

CORRECT = '''
from normbench.verdicts import Verdict

def judge(outcome, reply, item, entry):
    if outcome["verdict"] == Verdict.FAIL or reply.get("verdict") in (Verdict.PASS, Verdict.XFAIL):
        outcome.verdict = Verdict.ERROR
    fields = {"verdict": Verdict.ERROR, "summary": "error"}
    if reply[0] in ("ok", "error"):  # a wire message's kind, not a verdict
        pass
    if item.expect == "report":  # a spec's expectation
        pass
    return entry["pass"], {"kind": "error"}
'''


def test_the_scan_flags_each_way_a_planted_module_spells_a_verdict(tmp_path: Path) -> None:
    package = tmp_path / "normbench"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "planted.py").write_text(PLANTED)
    (package / "sub" / "correct.py").write_text(CORRECT)
    # an exempt module's name elsewhere in the package is scanned: only the package's own files are exempt
    (package / "sub" / "verdicts.py").write_text('verdict = "pass"\n')
    found = scan(package)
    planted = sorted(int(line.split(":")[1]) for line in found if line.startswith("normbench/sub/planted.py:"))
    assert planted == [3, 5, 7, 9, 10, 11, 12, 13, 14], found
    assert [line for line in found if not line.startswith("normbench/sub/planted.py:")] == [
        "normbench/sub/verdicts.py:1: verdict 'pass' as a string literal (use Verdict.PASS)"]
