"""The scheduler's host view as columns: one numpy array per figure, one row per host.

Filters and weighers run over 10,000 hosts as a few vector operations instead of a
Python loop over HostState objects (issue 16: a decision at 10,000 hosts took 70 ms
at p99). The table is kept current row by row as the view changes a host
(host_state.Hosts), so a decision never rebuilds it. Strings that filters compare (zone,
architecture, hypervisor type) are interned as small integers per table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from consumers.scheduler.host_state import HostState

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

FIGURES = ("vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used",
           "cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio",
           "failed_builds")
CODED = ("zone", "cpu_arch", "hypervisor_type")  # compared case-insensitively but the zone


class HostTable:
    """Rows 0..len-1 are the hosts; a removed host's row is filled by the last one."""

    def __init__(self, capacity: int = 64) -> None:
        self.rows: dict[str, int] = {}
        self.states: list[HostState] = []
        self._codes: dict[str, dict[str, int]] = {c: {} for c in CODED}
        self._rank: Ints | None = None  # rows by host name, computed when first needed
        self._alloc(capacity)

    @classmethod
    def of(cls, hosts: Iterable[HostState]) -> HostTable:
        table = cls()
        for h in hosts:
            table.upsert(h)
        return table

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "_columns", None)
        self._columns: dict[str, Floats] = {
            name: np.zeros(capacity) for name in (*FIGURES, "heartbeat", "disabled", *CODED)}
        if old is not None:
            n = len(self.states)
            for name, column in old.items():
                self._columns[name][:n] = column[:n]

    def __len__(self) -> int:
        return len(self.states)

    def column(self, name: str) -> Floats:
        """The live rows of one column (a view: do not keep it across changes)."""
        return self._columns[name][: len(self.states)]

    def code(self, column: str, value: str) -> int:
        """The integer a string stands for in a coded column (-1: no host has it)."""
        return self._codes[column].get(_norm(column, value), -1)

    def upsert(self, h: HostState) -> None:
        row = self.rows.get(h.host)
        if row is None:
            row = len(self.states)
            if row == len(self._columns["vcpus"]):
                self._alloc(2 * row)
            self.rows[h.host] = row
            self.states.append(h)
            self._rank = None
        else:
            self.states[row] = h
        c = self._columns
        for name in FIGURES:
            c[name][row] = getattr(h, name)
        c["heartbeat"][row] = _seconds(h.last_heartbeat)
        c["disabled"][row] = h.disabled
        for name in CODED:
            codes = self._codes[name]
            c[name][row] = codes.setdefault(_norm(name, getattr(h, name)), len(codes))

    def remove(self, host: str) -> None:
        row = self.rows.pop(host, None)
        if row is None:
            return
        last = len(self.states) - 1
        moved = self.states.pop()
        if row != last:
            self.states[row] = moved
            self.rows[moved.host] = row
            for column in self._columns.values():
                column[row] = column[last]
        self._rank = None

    def rows_of(self, hosts: Iterable[str]) -> Mask:
        """True on the rows of these hosts (names the table does not hold are ignored)."""
        mask = np.zeros(len(self.states), dtype=bool)
        mask[[self.rows[h] for h in hosts if h in self.rows]] = True
        return mask

    def where(self, passes: Iterable[bool]) -> Mask:
        """A mask from a per-host test, for the rare filters (hints) that need a host's
        instances: a Python loop, paid only when the request carries the hint."""
        return np.fromiter(passes, dtype=bool, count=len(self.states))

    @property
    def name_rank(self) -> Ints:
        """Each row's position in host-name order: the tie-break of equal weights."""
        if self._rank is None:
            order = sorted(range(len(self.states)), key=lambda r: self.states[r].host)
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            self._rank = rank
        return self._rank


def _norm(column: str, value: str) -> str:
    return value if column == "zone" else value.lower()


def _seconds(when: datetime | None) -> float:
    return when.timestamp() if when is not None else float("nan")
