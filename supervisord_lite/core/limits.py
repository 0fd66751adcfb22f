"""The manifest's limits, in one place: what the loader refuses, and why each number.

They keep checking any manifest linear in its size and cheap (a 1 MiB file of any
shape in well under a second and 100 MB), and keep every value within what the
daemon and the kernel can use. A real manifest of 500 services is about 100 KB, with
about 6,000 keys, 4,000 arrays and inline tables and 6,000 commas; every limit is
well above what 1,000 services with every key set need.
README.md (Manifest reference, Limits) lists them for people.
"""

from __future__ import annotations

MAX_FILE_BYTES = 1 << 20  # 1 MiB
MAX_NESTING = 10  # arrays and inline tables open at once; the manifest needs 2
MAX_KEY_PARTS = 10  # parts of one dotted key or table header; the manifest needs 5
MAX_KEYS = 60_000  # keys in the whole file, every part of a dotted key or header counted
MAX_CONTAINERS = 20_000  # arrays and inline tables in the whole file
MAX_COMMAS = 50_000  # commas between values in the whole file: bounds the values tomllib reads
MAX_ITEMS = 1_000  # items of one array, keys of one table (so also services and tiers)
MAX_STRING = 128 * 1024  # characters of one string or key: the kernel's limit for one argument
MAX_ARGUMENT_BYTES = 128 * 1024 - 1  # bytes of one argument or KEY=VALUE (MAX_ARG_STRLEN less the NUL)
MAX_PATTERN = 1024  # characters of a ready.log regular expression
MAX_PATTERNS_TOTAL = 64 * 1024  # characters of all of them (compiling costs ~5 us a character)
MAX_INT = (1 << 63) - 1  # TOML integers are 64-bit
MIN_INT = -(1 << 63)

MAX_SERVICE_NAME = 63  # a service name is a file name (logs/NAME.log) and a label
MAX_DURATION = 30 * 24 * 3600.0  # 30 days
MIN_PROBE_INTERVAL = 0.01  # 10ms: more often only burns CPU
MAX_SIZE = 1 << 40  # 1 TiB
MAX_LOG_BACKUPS = 100  # rotation looks at each backup
MAX_COUNT = 10_000  # start_limit, unhealthy_threshold
MAX_UID = (1 << 32) - 2  # a numeric user: uid_t, less (uid_t)-1
MAX_PATH_BYTES = 4095  # PATH_MAX less the NUL
MAX_PATH_PART_BYTES = 255  # NAME_MAX

MAX_PROBLEMS = 200  # problems reported for one manifest; the rest are counted
HINT_BUDGET = 5_000  # "did you mean" comparisons for one manifest (each costs up to ~0.1 ms)


def plural(count: int, noun: str) -> str:
    """``1 key``, ``30,000 keys``: numbers in messages are grouped for people."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
