"""Prints lines slowly, recording when each was printed; the third one says READY.

usage: slow_log_ready.py RECORD_FILE
"""

import json
import sys
import time

record = sys.argv[1]
for text in ("booting", "loading models", "READY to serve", "serving"):
    with open(record, "a") as f:
        f.write(json.dumps({"line": text, "time": time.time()}) + "\n")
    print(text, flush=True)
    time.sleep(0.3)
while True:
    time.sleep(60)
