"""What every engine provides to :class:`storage.database.Database`.

Each engine hands out :class:`EngineConnection` objects through three context
managers (a single statement, a write transaction) and hides its driver's
types: rows come back as :class:`Row`, constraint violations as
:mod:`storage.errors` types. Everything engine-specific lives in the engine
modules beside this one; nothing above ``storage/engines`` checks which engine
it runs on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol, overload

__all__ = ["Args", "Engine", "EngineConnection", "Row", "column_index"]

Args = Sequence[Any]


def column_index(names: Sequence[str]) -> dict[str, int]:
    """Map each column name to its position; the first column of a name wins."""
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)
    return index


class Row:
    """One result row, the same type on every engine.

    Readable by column name (``r["room_id"]``) and by position (``r[0]``);
    iterating yields the values, like a tuple. ``dict(r.items())`` or
    :meth:`as_dict` gives a plain dict.
    """

    __slots__ = ("_columns", "_values")

    def __init__(self, values: tuple[Any, ...], columns: Mapping[str, int]) -> None:
        self._values = values
        self._columns = columns

    @overload
    def __getitem__(self, key: int) -> Any: ...

    @overload
    def __getitem__(self, key: str) -> Any: ...

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            try:
                return self._values[self._columns[key]]
            except KeyError:
                raise KeyError(f"no column {key!r} in row with columns {self.keys()}") from None
        return self._values[key]

    def get(self, key: str, default: Any = None) -> Any:
        i = self._columns.get(key)
        return default if i is None else self._values[i]

    def keys(self) -> list[str]:
        return list(self._columns)

    def values(self) -> tuple[Any, ...]:
        return self._values

    def items(self) -> list[tuple[str, Any]]:
        return [(name, self._values[i]) for name, i in self._columns.items()]

    def as_dict(self) -> dict[str, Any]:
        return {name: self._values[i] for name, i in self._columns.items()}

    def __contains__(self, key: object) -> bool:
        return key in self._columns

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Row):
            return self._values == other._values and list(self._columns) == list(other._columns)
        if isinstance(other, tuple):
            return self._values == other
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.items())
        return f"Row({inner})"


class EngineConnection(Protocol):
    """One connection, checked out for one statement or one transaction.

    SQL arrives with ``$1`` placeholders; the engine rewrites it if its driver
    needs another style.
    """

    async def execute(self, sql: str, args: Args) -> None: ...

    async def fetch(self, sql: str, args: Args) -> list[Row]: ...

    async def executemany(self, sql: str, args_seq: Iterable[Args]) -> None: ...

    async def execute_script(self, sql: str) -> None:
        """Run several ``;``-separated statements without parameters, inside
        the current transaction (never committing on its own)."""

    async def lock(self, key: str) -> None:
        """Hold a lock named ``key``, exclusive across processes, until the
        current transaction ends."""


class Engine(ABC):
    name: ClassVar[str]

    @abstractmethod
    def statement(self, sql: str) -> AbstractAsyncContextManager[EngineConnection]:
        """A connection to run ``sql`` as one statement in autocommit."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[EngineConnection]:
        """A connection inside a fresh write transaction.

        Committed when the block exits normally, rolled back when it raises.
        """

    @abstractmethod
    async def close(self) -> None: ...
