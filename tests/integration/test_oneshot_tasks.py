"""One-shot tasks (``kind = "oneshot"``) with real processes: a finished task lets its
dependents start and is not re-run by `svc up`; a failed one blocks them with the reason."""

from __future__ import annotations

from tests.integration.harness import DEMO, Platform


def test_oneshot_migration_finishes_before_its_dependent_spawns(platform: Platform) -> None:
    platform.add("db", tier="infra")
    platform.services["migrate"] = {
        "tier": "app", "kind": "oneshot", "depends_on": ["db"],
        "command": f"{DEMO} --record {platform.records} --oneshot 0.4",
    }
    platform.add("api", depends_on=["migrate"])
    platform.write()

    result = platform.svc("up")
    assert result.returncode == 0, result.stderr
    status = platform.status()
    assert status["migrate"]["state"] == "exited" and status["migrate"]["exit_code"] == 0
    assert status["api"]["state"] == "ready"
    finished = [r for r in platform.events(name="migrate") if r["event"] in ("exiting", "done", "finished", "exited")]
    spawned_api = platform.events("spawned", "api")[0]["time"]
    assert finished, platform.events(name="migrate")
    assert spawned_api > finished[-1]["time"]

    # `svc up` again does not re-run a finished task; `svc restart` does
    assert platform.svc("up").returncode == 0
    assert len(platform.events("spawned", "migrate")) == 1
    assert platform.svc("restart", "migrate").returncode == 0
    assert len(platform.events("spawned", "migrate")) == 2


def test_failed_oneshot_blocks_its_dependents_with_the_reason(platform: Platform) -> None:
    platform.services["migrate"] = {
        "tier": "infra", "kind": "oneshot", "failed_retry": 0,
        "command": f"{DEMO} --record {platform.records} --oneshot 0.1 --exit-code 4",
    }
    platform.add("api", depends_on=["migrate"])
    platform.write()
    result = platform.svc("up")
    assert result.returncode == 1
    assert "migrate: failed: exited with code 4" in result.stderr
    api = platform.status()["api"]
    assert api["state"] == "waiting" and "migrate (failed: exited with code 4)" in api["reason"]
    assert platform.events("spawned", "api") == []
