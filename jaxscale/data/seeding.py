"""Seeds for each random purpose, derived from the config seed and a purpose name."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, purpose: str) -> int:
  """A 31-bit seed that is a pure function of (`seed`, `purpose`), e.g. (0, "shuffle")."""
  digest = hashlib.sha256(f"{int(seed)}/{purpose}".encode()).digest()
  return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
