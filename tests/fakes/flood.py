"""Write argv[1] numbered lines to stdout, then one line of argv[2] 'x' characters without a
newline in between chunks, then a partial last line 'partial-end' (no newline), and exit 0."""

import sys

count = int(sys.argv[1])
long_len = int(sys.argv[2]) if len(sys.argv) > 2 else 0
out = sys.stdout
for i in range(count):
    out.write(f"line {i} héllo\n")
if long_len:
    out.write("x" * long_len + "\n")
out.flush()
sys.stderr.write("to stderr\n")
sys.stderr.flush()
out.write("partial-end")
out.flush()
