"""Print one JSON line: the named environment variables (argv[1:]), cwd, uid, gid, groups."""

import json
import os
import sys

print(
    json.dumps(
        {
            "env": {k: os.environ.get(k) for k in sys.argv[1:]},
            "cwd": os.getcwd(),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "groups": sorted(os.getgroups()),
            "pgid": os.getpgid(0),
            "sid": os.getsid(0),
            "pid": os.getpid(),
        }
    ),
    flush=True,
)
