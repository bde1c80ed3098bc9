"""Repository-wide pytest configuration.

A skipped test counts as a failure in this project: a test that cannot run means a missing
dependency, and scripts/install-deps.sh must install it.
"""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_DIR = os.environ.get("OFFERD_BUILD_DIR", os.path.join(ROOT, "build"))
for path in (ROOT, os.path.join(BUILD_DIR, "py")):
    if path not in sys.path:
        sys.path.insert(0, path)


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001 - pytest hook signature
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped: a skipped test counts as a failure",
                            red=True)
        session.exitstatus = 1
