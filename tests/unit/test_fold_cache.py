"""The projector's FoldCache: committed states only, deleted ones dropped, bounded."""

from __future__ import annotations

import dataclasses

from novalog.domain import states as s
from novalog.domain.instance import Instance, apply, fold
from projections.writers import FoldCache
from tests.unit.test_instance_fold import (
    Clock,
    attempt,
    build,
    delete_requested,
    deleted,
    requested,
)


def active() -> tuple[Clock, Instance]:
    c = Clock()
    state = fold([requested(c), *attempt(c, "cmp1"), *build(c, "cmp1")])
    assert state is not None
    return c, state


def test_a_committed_state_is_kept_and_a_deleted_server_leaves() -> None:
    c, state = active()
    cache = FoldCache()
    cache.committed({state.uuid: state})
    assert cache.states == {state.uuid: state}
    gone = apply(apply(state, delete_requested(c)), deleted(c))
    assert gone.vm_state == s.DELETED
    cache.committed({state.uuid: gone})
    assert cache.states == {}


def test_the_least_recently_written_go_first_past_the_limit() -> None:
    _, state = active()
    cache = FoldCache(limit=3)
    copies = [dataclasses.replace(state, uuid=f"u{i}") for i in range(5)]
    for copy in copies[:3]:
        cache.committed({copy.uuid: copy})
    cache.committed({"u0": copies[0]})  # written again: now the most recent
    cache.committed({c.uuid: c for c in copies[3:]})
    assert list(cache.states) == ["u0", "u3", "u4"]
    cache.clear()
    assert cache.states == {}
