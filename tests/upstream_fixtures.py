"""Load the upstream answer samples copied verbatim from /work/shared/upstream-samples/."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"


def sample(name: str):
    return json.loads((FIXTURES / name).read_text())


def sample_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()
