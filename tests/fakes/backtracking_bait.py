"""Bait for a backtracking regex engine: once the file argv[1] exists, print lines of 28, 29
and 30 'a' followed by '!' (``(a+)+$`` takes Python's ``re`` from seconds to minutes on
each), then a line ``(a+)+$`` does match, recording when each line was printed to argv[2].

usage: backtracking_bait.py TRIGGER_FILE RECORD_FILE
"""

import json
import os
import sys
import time

trigger, record = sys.argv[1], sys.argv[2]


def say(text: str) -> None:
    with open(record, "a") as f:
        f.write(json.dumps({"line": text, "time": time.time()}) + "\n")
    print(text, flush=True)


say("waiting for the trigger")
while not os.path.exists(trigger):
    time.sleep(0.01)
for n in (28, 29, 30):
    say("a" * n + "!")
say("ready to serve data")
while True:
    time.sleep(3600)
