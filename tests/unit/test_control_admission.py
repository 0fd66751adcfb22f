"""Who gives way when too many control connections are open."""

from __future__ import annotations

import os
import resource

import pytest

from supervisord_lite.daemon.control_admission import Admission, DescriptorBudget

OWN, ROOT, OTHER = 1000, 0, 1001


@pytest.mark.anyio
async def test_a_newcomer_closes_the_oldest_idle_connection_of_the_uid_holding_the_most() -> None:
    table = Admission(own_uid=OWN, limit=4)
    own_old, _ = table.admit(OWN)
    root_1, _ = table.admit(ROOT)
    root_2, _ = table.admit(ROOT)
    own_new, _ = table.admit(OWN)
    assert table.count() == 4
    newcomer, within = table.admit(OWN)
    assert within
    assert root_1.scope.cancel_called and not root_2.scope.cancel_called  # a tie: root's oldest goes, not its own
    assert not own_old.scope.cancel_called and not own_new.scope.cancel_called
    assert table.count() == 4 and table.count(ROOT) == 1
    table.release(root_1)  # its task closes it later: nothing changes twice
    assert table.count() == 4 and root_1.closed.is_set()


@pytest.mark.anyio
async def test_a_request_in_progress_is_never_cut_off_and_the_newcomer_is_refused_instead() -> None:
    table = Admission(own_uid=OWN, limit=2)
    busy = [table.admit(OWN)[0] for _ in range(2)]
    for conn in busy:
        table.mark_busy(conn)
    refused, within = table.admit(OWN)
    assert not within
    assert not any(c.scope.cancel_called for c in busy)
    assert table.evict_one() is refused  # the refused one is idle until it has been answered
    assert table.evict_one() is None


@pytest.mark.anyio
async def test_another_uid_gets_at_most_half_so_the_daemons_own_uid_always_finds_room() -> None:
    table = Admission(own_uid=OWN, limit=8)
    assert table.cap_for(OWN) == 8 and table.cap_for(ROOT) == 4 and table.cap_for(OTHER) == 4
    roots = [table.admit(ROOT)[0] for _ in range(4)]
    for conn in roots:
        table.mark_busy(conn)
    assert table.admit(ROOT)[1] is False  # over its half, nothing of its own idle to close
    own = [table.admit(OWN) for _ in range(3)]
    assert all(within for _, within in own)  # the other half is the daemon's own user's
    assert not any(c.scope.cancel_called for c in roots)


def test_the_descriptor_budget_keeps_an_eighth_of_the_limit_free_for_everything_else() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd")) - 1
    low = in_use + 20
    if hard != resource.RLIM_INFINITY and hard < low:
        pytest.skip("the hard descriptor limit is too low to test with")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        limit = DescriptorBudget().limit(0)
        held = [open(os.devnull) for _ in range(8)]  # a service started since: measured at once
        try:
            tighter = DescriptorBudget().limit(0)
        finally:
            for f in held:
                f.close()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    reserve = max(8, low // 8)
    assert limit == max(2, min(low // 4, low - in_use - reserve)), (limit, low, in_use)
    assert tighter == max(2, min(low // 4, low - (in_use + 8) - reserve)), (tighter, limit, low, in_use)
