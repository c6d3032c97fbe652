"""Which editor a browser test runs on (the ``server`` fixture's parameter, tests/browser/conftest.py). Every test
names its editors, so that the tests of one editor share one server (a test without the parameter would start a
server of its own)."""

import pytest

PINNED, NEWER = "pinned-frontend", "newer-frontend"
pinned_frontend = pytest.mark.parametrize("server", [PINNED], indirect=True)
both_frontends = pytest.mark.parametrize("server", [PINNED, NEWER], indirect=True)
newer_frontend = pytest.mark.parametrize("server", [NEWER], indirect=True)
