"""glibc's mmap threshold, fixed so that large blocks go back to the system when freed
(the daemon renders multi-megabyte scrapes and state files again and again)."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from supervisord_lite.host.malloc import malloc_trim


def _glibc_with_mallinfo2() -> bool:
    try:
        ctypes.CDLL(None).mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


#: In a fresh interpreter: free one 4 MB block, then hold another, and print how many
#: bytes glibc has mapped for large blocks (mallinfo2's hblkhd) while it is held.
_PROBE = textwrap.dedent("""
    import ctypes, sys
    from supervisord_lite.host.malloc import keep_large_blocks_mapped

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "fixed":
        assert keep_large_blocks_mapped()
    first = bytearray(4 << 20)
    del first  # glibc, left alone, now raises its mmap threshold to 4 MB
    second = bytearray(4 << 20)
    print(libc.mallinfo2().hblkhd)
""")


def _mapped_while_holding_a_second_block(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout)


@pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc 2.33 or later only")
def test_a_large_block_is_mapped_again_after_one_was_freed_so_it_goes_back_when_freed() -> None:
    assert _mapped_while_holding_a_second_block("fixed") >= 4 << 20
    # and glibc left alone would have served it from the heap, which keeps it:
    assert _mapped_while_holding_a_second_block("default") < 4 << 20


def test_malloc_trim_is_found_on_glibc_or_is_none() -> None:
    trim = malloc_trim()
    assert trim is None or trim(0) in (0, 1)


def test_a_python_without_ctypes_gets_no_tuning_and_no_error() -> None:
    code = (
        "import sys\n"
        "sys.modules['ctypes'] = None  # as in a Python built without libffi\n"
        "from supervisord_lite.host.malloc import keep_large_blocks_mapped, malloc_trim\n"
        "assert keep_large_blocks_mapped() is False and malloc_trim() is None\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr
