import os
from pathlib import Path

# Every multi-worker run in the tests (in process or via the CLI) checks that
# each arranged row is on the worker owning its key (ddir/engine/exchange.py).
os.environ["DDIR_CHECK_OWNERS"] = "1"
# Cursor tokens (SPEC C4) are signed with a random secret per server unless
# this fixes it: then every run, and every -w N, prints the same tokens.
os.environ.setdefault("DDIR_CURSOR_SECRET", "ddir-tests")
# `ddir serve` keeps its token where `ddir connect` finds it (SPEC E1): in a
# private directory of this test run, not the user's.
import tempfile  # noqa: E402
os.environ["DDIR_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="ddir-runtime-")

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DDIR_SHARED", ROOT.parent / "shared"))
UPSTREAM = SHARED / "conformance" / "upstream"


@pytest.fixture
def upstream():
    if not UPSTREAM.is_dir():
        raise FileNotFoundError(f"conformance data missing: {UPSTREAM} (../shared must sit beside the repo)")
    return UPSTREAM


def upstream_programs():
    return sorted(p for p in UPSTREAM.rglob("*") if p.suffix in (".ddp", ".ddir"))
