"""Makes `core` importable from the repository root, as it is when the pack is not installed.

With ``VIDEO_UNLEARNING_REQUIRE_ALL=1`` (``dev.py test`` sets it on CI) a skipped test fails the run: on a machine
that was set up to run everything, a skip means a host, server or browser test silently did not run.
"""

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# this folder for the tests' shared modules (comfy_host, script_module), and before it the repository root for `core`
for _path in (Path(__file__).resolve().parent, REPO_ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

REQUIRE_ALL = os.environ.get("VIDEO_UNLEARNING_REQUIRE_ALL", "") not in ("", "0")


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if REQUIRE_ALL and skipped and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    skipped = len(terminalreporter.stats.get("skipped", []))
    if REQUIRE_ALL and skipped:
        terminalreporter.write_line(
            f"FAILED: {skipped} test(s) skipped while VIDEO_UNLEARNING_REQUIRE_ALL is set: every host, server and "
            "browser test must run here (see the skip reasons above)", red=True)
