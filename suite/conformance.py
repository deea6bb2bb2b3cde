"""`pytest suite` in a clone of the repository: the same run as `pytest --pyargs normbench.suite`.

The suite itself ships inside the package (normbench/suite/); normbench's pytest plugin collects this file like
normbench/suite/conformance.py, so the clone's node ids stay ``suite/conformance.py::<test id>``.
"""
