import os
from pathlib import Path

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
