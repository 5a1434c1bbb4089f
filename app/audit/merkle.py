"""RFC 6962 Merkle tree hashing over the audit log, as pure functions (verifiable offline).

leaf = SHA-256(0x00 ‖ event hash), node = SHA-256(0x01 ‖ left ‖ right); a tree of n leaves splits
at the largest power of two below n. A `Frontier` keeps only the roots of the perfect subtrees
along the tree's right edge (one per set bit of its size), so the checkpointer extends the tree
by the new events without reading the old ones again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(event_hash_hex: str) -> bytes:
    return hashlib.sha256(b"\x00" + bytes.fromhex(event_hash_hex)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


class Frontier:
    """The right edge of a tree: `nodes[i]` roots a perfect subtree, sizes strictly decreasing."""

    def __init__(self, size: int = 0, nodes: Iterable[bytes] = ()):
        self.size = size
        # Each entry is (subtree height, root); heights are the set bits of `size`, high to low.
        heights = [bit for bit in range(size.bit_length() - 1, -1, -1) if size >> bit & 1]
        nodes = list(nodes)
        if len(nodes) != len(heights):
            raise ValueError(f"a tree of {size} leaves has {len(heights)} edge nodes, not {len(nodes)}")
        self._nodes: list[tuple[int, bytes]] = list(zip(heights, nodes))

    def append(self, event_hash_hex: str) -> None:
        height, node = 0, leaf_hash(event_hash_hex)
        while self._nodes and self._nodes[-1][0] == height:
            _, left = self._nodes.pop()
            height, node = height + 1, node_hash(left, node)
        self._nodes.append((height, node))
        self.size += 1

    def extend(self, event_hashes: Iterable[str]) -> Frontier:
        for event_hash in event_hashes:
            self.append(event_hash)
        return self

    @property
    def nodes(self) -> list[bytes]:
        return [node for _, node in self._nodes]

    def root(self) -> bytes:
        """MTH of the leaves so far: the edge nodes folded from the smallest subtree up, which is
        RFC 6962's split at the largest power of two, applied recursively."""
        if not self._nodes:
            return EMPTY_ROOT
        root = self._nodes[-1][1]
        for _, node in reversed(self._nodes[:-1]):
            root = node_hash(node, root)
        return root
