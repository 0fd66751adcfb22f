"""The daemon's open-file limit: raised to what the services need, up to the hard limit,
never lowered (run in a child process: the limit is per process)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, resource, sys
from supervisord_lite.host.fdlimit import fit_open_file_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (100, 300))
out = []
for services in map(int, sys.argv[1:]):
    got = fit_open_file_limit(services)
    out.append([got.before, got.soft, got.hard, got.needed, got.minimum, got.enough,
                resource.getrlimit(resource.RLIMIT_NOFILE)[0]])
print(json.dumps(out))
"""


def _fit(*services: int) -> list[list[object]]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, services)], capture_output=True, text=True,
                          timeout=60, check=True)
    return json.loads(done.stdout)


def test_the_soft_limit_rises_to_the_need_and_stops_at_the_hard_limit() -> None:
    small, big, bigger = _fit(10, 50, 100)
    assert small == [100, 286, 300, 286, 62, True, 286]  # 10 services x 3 + 256 for the daemon's own
    assert big == [286, 300, 300, 406, 182, True, 300]  # capped by the hard limit: less room, enough to run them
    assert bigger == [300, 300, 300, 556, 332, False, 300]  # 100 x 3 + 32 do not fit in 300: said so


def test_the_soft_limit_is_never_lowered() -> None:
    first, fewer = _fit(14, 0)
    assert first[1] == 298 and fewer == [298, 298, 300, 256, 32, True, 298]
