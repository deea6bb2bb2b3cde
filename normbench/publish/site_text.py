"""Free text as a visitor of the site may read it: no local file paths, no citations of files they do not have.

Records carry text written on the machine that ran them: an --impl-path source names the plugin's file as that
machine spelled it (``/home/alice/src/plugin.py``), an error its traceback's paths, and the known-failure reasons
cite the project's working notes (BUGS.md, ...) and its own tests, none of which a pip-installed normbench ships.
The site says the thing instead, in words a visitor can act on; the records themselves keep every word.
"""

from __future__ import annotations

import re

#: an absolute POSIX path (two components or more, or under ~) or a Windows drive path; a URL's path is not one
_POSIX_PATH = re.compile(r"(?<![\w.:/~-])~?(?:/[\w.+@%-]+){2,}/?|(?<![\w.:/-])~(?:/[\w.+@%-]+)+/?")
_WINDOWS_PATH = re.compile(r"(?<![\w])[A-Za-z]:\\(?:[\w.+@%-]+\\)*[\w.+@%-]*")
#: the project's working notes: in a clone of normbench only, never in the package
_NOTES = r"(?:BUGS|NORMS|DESIGN)\.md"
UNSHIPPED = (
    (re.compile(rf"\b{_NOTES} class\b"), "Known bug class"),
    (re.compile(rf"\s*\((?:see )?{_NOTES}[^()]*\)"), ""),
    (re.compile(rf"\s*\b(?:see |in )?{_NOTES}(?:, | §\d+|: |\b)"), " "),
    (re.compile(r"\btests/test_\w+\.py\b"), "normbench's own tests"),
)


def _basename(match: re.Match[str]) -> str:
    path = match.group(0).rstrip("/\\")
    name = re.split(r"[/\\]", path)[-1]
    return f"…/{name}" if name else "…"


def site_text(text: str) -> str:
    """`text` with each local path cut to its last component ("…/plugin.py") and the project's notes and tests,
    which users do not have, said in words or left out."""
    said = _WINDOWS_PATH.sub(_basename, _POSIX_PATH.sub(_basename, text))
    for pattern, words in UNSHIPPED:
        said = pattern.sub(words, said)
    # a citation left out leaves its spaces behind; text nothing was taken from keeps its own spacing
    return text if said == text else re.sub(r" {2,}", " ", said).strip()
