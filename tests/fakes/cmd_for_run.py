"""The command `svc run` runs in tests: writes its SVC_* environment to OUT as JSON,
then exits CODE; with --wait-signal, says "started" in OUT.started and waits for SIGTERM
or SIGINT, records it in OUT.signal and exits CODE.

usage: cmd_for_run.py OUT CODE [--wait-signal]
"""

import json
import os
import signal
import sys
import time

out, code = sys.argv[1], int(sys.argv[2])
with open(out, "w") as f:
    json.dump({k: v for k, v in os.environ.items() if k.startswith("SVC_")}, f)
if "--wait-signal" in sys.argv:

    def record(signum: int, frame: object) -> None:
        with open(out + ".signal", "w") as f:
            f.write(signal.Signals(signum).name)
        sys.exit(code)

    signal.signal(signal.SIGTERM, record)
    signal.signal(signal.SIGINT, record)
    with open(out + ".started", "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.1)
sys.exit(code)
