"""Which host reads which raw example of a source, in what order, and where a host stands:
the training order of one source and its position as JSON, made so that a run can
continue on another number of hosts reading every example of the epoch exactly once.

The order does not depend on the host count:
  * epoch e: the source's units in a permutation drawn from (seed, source, e), cut into
    blocks of `units_per_block` consecutive units;
  * block j's *stream*: its units interleaved one example at a time, shuffled with a
    buffer seeded by (seed, source, e, j); its k-th raw element is element k.

Hosts share the blocks out.  With at least as many blocks as hosts, host h of P reads
blocks h, h + P, h + 2P, ... ("block mode"); with fewer, every host reads every block and
keeps the elements k with k % P == h ("stride mode").

A *work item* [epoch, block, L, starts] keeps element k of that block's stream iff
k >= starts[k % L]; NEVER as a start keeps none of that residue.  One item can so say
"this block from element o on", "every P-th element" or "what hosts 0 and 2 of an
earlier run had not read yet".

A host's position in a source (JSON):

    {"pending": [item, ...], "epoch": E, "index": i, "offset": o}

its stream is first the `pending` items (left by a resume on another host count), then
its own blocks of epoch E from the i-th, then all of its blocks of epochs E+1, E+2, ...;
the first item of that stream skips its elements below `offset`.  `advance` turns "the
next element is element k of the g-th item since this position" into a new position,
and `rebalance` deals the unread rest of every epoch in progress out to a new set of
hosts (then everybody starts the next epoch afresh).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

NEVER = 2**62  # a start no element reaches


def start_position() -> dict:
    return {"pending": [], "epoch": 0, "index": 0, "offset": 0}


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one source's blocks are shared among `process_count` hosts."""

    num_units: int
    units_per_block: int
    process_index: int
    process_count: int

    @property
    def per_block(self) -> int:
        return max(1, min(self.units_per_block, self.num_units))

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.num_units / self.per_block)

    @property
    def stride(self) -> bool:
        """Fewer blocks than hosts: every host reads every block and keeps every P-th element."""
        return self.num_blocks < self.process_count

    @property
    def blocks_per_epoch(self) -> int:
        """How many blocks this host reads each epoch (len(own_blocks()) without the list)."""
        if self.stride:
            return self.num_blocks
        return len(range(self.process_index, self.num_blocks, self.process_count))

    def own_blocks(self) -> list[int]:
        """This host's blocks of every epoch, in reading order."""
        if self.stride:
            return list(range(self.num_blocks))
        return list(range(self.process_index, self.num_blocks, self.process_count))

    def own_item(self, epoch: int, block: int) -> list:
        """The work item of one of this host's blocks in steady state."""
        if not self.stride:
            return [epoch, block, 1, [0]]
        p, h = self.process_count, self.process_index
        return [epoch, block, p, [0 if r == h else NEVER for r in range(p)]]


def check_position(position: dict) -> None:
    keys = {"pending", "epoch", "index", "offset"}
    if not isinstance(position, dict) or set(position) != keys:
        raise ValueError(f"not a source position (keys {sorted(keys)}): {str(position)[:200]}")


def advance(position: dict, layout: Layout, item: int, next_element: int) -> dict:
    """The position whose stream starts at element `next_element` of the `item`-th work
    item of `position`'s stream (0: its first)."""
    pending = position["pending"]
    if item < len(pending):
        return {**position, "pending": pending[item:], "offset": next_element}
    per_epoch = layout.blocks_per_epoch
    index = position["index"] + item - len(pending)
    return {"pending": [], "epoch": position["epoch"] + index // per_epoch, "index": index % per_epoch,
            "offset": next_element}


def started_epoch(position: dict) -> int:
    """The newest epoch the host has begun reading (-1: none)."""
    steady_begun = position["index"] > 0 or (position["offset"] > 0 and not position["pending"])
    newest = position["epoch"] if steady_begun else position["epoch"] - 1
    return max([newest] + [item[0] for item in position["pending"]])


def remaining_items(position: dict, layout: Layout, through_epoch: int) -> list[list]:
    """The host's unread work up to and including `through_epoch`, as explicit items."""
    items = [_copy(item) for item in position["pending"]]
    for epoch in range(position["epoch"], through_epoch + 1):
        first = position["index"] if epoch == position["epoch"] else 0
        items.extend(layout.own_item(epoch, block) for block in layout.own_blocks()[first:])
    if items:
        items[0] = _from(items[0], position["offset"])
    return items


def rebalance(positions: Sequence[dict], layout: Layout) -> dict:
    """The position of host `layout.process_index` of `layout.process_count` that
    continues a run whose hosts stood at `positions` (one per old host, in order).

    Every epoch some old host had begun is finished first: its unread items (merged per
    block) are dealt out round-robin when there are at least as many as new hosts, else
    each is split among all of them by element (k % new count).  Reading all new hosts'
    pending items therefore reads the rest of those epochs exactly once; the next epoch
    starts afresh with the new layout.  `positions` are checked by the caller
    (check_position)."""
    old = [dataclasses.replace(layout, process_index=h, process_count=len(positions)) for h in range(len(positions))]
    through = max(started_epoch(p) for p in positions)
    by_block: dict[tuple[int, int], list] = {}
    for position, lay in zip(positions, old):
        for item in remaining_items(position, lay, through):
            key = (item[0], item[1])
            by_block[key] = _merge(by_block[key], item) if key in by_block else item
    mine: list[list] = []
    count, host = layout.process_count, layout.process_index
    for epoch in sorted({e for e, _ in by_block}):
        items = [_simplify(by_block[key]) for key in sorted(by_block) if key[0] == epoch]
        items = [item for item in items if item is not None]
        if len(items) >= count:
            mine.extend(items[host::count])
        else:
            mine.extend(item for item in (_simplify(_split(it, count, host)) for it in items) if item is not None)
    return {"pending": mine, "epoch": through + 1, "index": 0, "offset": 0}


def padded_items(items: Sequence[list]) -> tuple[list, list, list, list]:
    """(epochs, blocks, moduli, starts padded to one length with NEVER) for tf.data."""
    width = max((item[2] for item in items), default=1)
    starts = [list(item[3]) + [NEVER] * (width - item[2]) for item in items]
    return [i[0] for i in items], [i[1] for i in items], [i[2] for i in items], starts


# -- item algebra ---------------------------------------------------------------------


def _copy(item) -> list:
    return [int(item[0]), int(item[1]), int(item[2]), [int(s) for s in item[3]]]


def _from(item, offset: int) -> list:
    """Only elements >= offset."""
    return [item[0], item[1], item[2], [max(s, offset) for s in item[3]]]


def _expand(item, modulus: int) -> list[int]:
    return [item[3][r % item[2]] for r in range(modulus)]


def _merge(a, b) -> list:
    """Elements kept by either item of one block."""
    modulus = math.lcm(a[2], b[2])
    return [a[0], a[1], modulus, [min(x, y) for x, y in zip(_expand(a, modulus), _expand(b, modulus))]]


def _split(item, count: int, host: int) -> list:
    """The item's elements k with k % count == host."""
    modulus = math.lcm(item[2], count)
    starts = _expand(item, modulus)
    return [item[0], item[1], modulus, [s if r % count == host else NEVER for r, s in enumerate(starts)]]


def _simplify(item) -> list | None:
    """The same item with the smallest period of its starts; None if it keeps nothing."""
    starts = item[3]
    if all(s >= NEVER for s in starts):
        return None
    modulus = item[2]
    for period in range(1, modulus + 1):
        if modulus % period == 0 and all(starts[r] == starts[r % period] for r in range(modulus)):
            return [item[0], item[1], period, starts[:period]]
    return item
