"""Splitting a cluster across several ``watch`` (or ``check``) processes: ``--shard I/N``.

Imports ``config`` only. A node belongs to exactly one of the N shards, chosen by rendezvous
(highest-random-weight) hashing of its name: for each shard ``i`` a 64-bit BLAKE2b hash of
``"i/name"``, and the node goes to the shard with the highest. So the assignment

- depends on the node's name and N alone: reordering ``cluster.yaml``, or adding and removing
  other nodes, never moves a node (a new node lands in one shard, a removed one leaves its own);
- is the same on every host and Python (no ``hash()`` randomisation);
- moves only about 1/N of the nodes when N changes by one (``hash mod N`` would move most),
  each to or from the shard that appeared or went;
- is balanced the way a random assignment is: ``n/N`` nodes per shard, give or take a few
  ``sqrt(n/N)`` (``n`` the node count).

The globs of ``--nodes`` select first, then the shard splits what they selected: ``--nodes
'rack1*' --shard 1/2`` is half of rack 1.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ugro_health.config import NodeConfig

_SPEC = re.compile(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*")


class ShardError(ValueError):
    """A ``--shard`` that is not ``I/N`` with 1 <= I <= N."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ShardError(f"shard {self.index}/{self.count}: I must be between 1 and N")

    @property
    def label(self) -> str:
        """``1/4``, as given on the command line and in the ``shard`` metric label."""
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        return shard_of(name, self.count) == self.index

    def select(self, nodes: Iterable[NodeConfig]) -> tuple[NodeConfig, ...]:
        """The ``nodes`` this shard owns, in their order."""
        return tuple(node for node in nodes if self.owns(node.name))


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; anything else raises ``ShardError`` with a one-line why."""
    match = _SPEC.fullmatch(text)
    if match is None:
        raise ShardError(f"--shard {text!r}: expected I/N, e.g. 1/4 (shard I of N, from 1)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ShardError(f"--shard {text!r}: I must be between 1 and N (e.g. 1/{max(count, 2)})")
    return Shard(index, count)


def shard_of(name: str, count: int) -> int:
    """The shard (1-based, of ``count``) that owns node ``name``."""
    if count <= 1:
        return 1
    best, owner = -1, 1
    for index in range(1, count + 1):
        digest = hashlib.blake2b(f"{index}/{name}".encode(), digest_size=8).digest()
        weight = int.from_bytes(digest, "big")
        if weight > best:
            best, owner = weight, index
    return owner


def split(names: Sequence[str], count: int) -> dict[int, list[str]]:
    """Every shard's names (shards that own none included), for docs, tests and tools."""
    shards: dict[int, list[str]] = {i: [] for i in range(1, count + 1)}
    for name in names:
        shards[shard_of(name, count)].append(name)
    return shards
