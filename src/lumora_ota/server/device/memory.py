"""``BytesLRU``: a least-recently-used map of byte strings bounded by their total size."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BytesLRU(Generic[K, V]):
    """Values that each carry a byte size, the least recently used dropped once their total
    passes ``limit`` (the newest entry always stays, so one large value still serves)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value under ``key`` (marked recently used), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: K, value: V, nbytes: int) -> None:
        """Keep ``value`` (``nbytes`` large) under ``key``, dropping the oldest past the limit."""
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old[1]
        self._items[key] = (value, nbytes)
        self.size += nbytes
        while self.size > self.limit and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self.size -= dropped

    def __len__(self) -> int:
        return len(self._items)
