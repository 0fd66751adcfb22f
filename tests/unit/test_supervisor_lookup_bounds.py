"""`svc status` and `svc down` read ``[supervisor]`` without the bounds scanner when counting
alone shows the text cannot break a bound: that shortcut must never pass a text the scanner
refuses, and must give the same table as the full check."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisord_lite.cli.client import _supervisor_table, plainly_within_bounds
from supervisord_lite.core.limits import MAX_KEY_PARTS, MAX_NESTING
from supervisord_lite.core.toml_bounds import check_toml_bounds

#: The characters that make keys, dotted keys, headers, arrays, inline tables and strings.
TOML_BITS = st.sampled_from(["a", "b", ".", "[", "]", "{", "}", ",", "=", '"', "'", " ", "\n", "#", "1", "\\"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(TOML_BITS, max_size=200).map("".join))
def test_what_counting_clears_the_scanner_clears_too(text: str) -> None:
    if plainly_within_bounds(text):
        assert check_toml_bounds(text) is None, text


def test_counting_clears_a_usual_supervisor_table_and_not_the_shapes_that_break_a_bound() -> None:
    usual = '[supervisor]\nname = "shop"\nstate_dir = ".svc"\nmetrics = "127.0.0.1:9108"\n\n[tiers.infra]\norder = 0\n'
    assert plainly_within_bounds(usual) and check_toml_bounds(usual) is None
    long_key = "a" + ".a" * MAX_KEY_PARTS + " = 1\n"
    deep = "x = " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + "\n"
    for broken in (long_key, deep):
        assert check_toml_bounds(broken) is not None
        assert not plainly_within_bounds(broken)


def test_the_lookup_reads_the_same_table_either_way(tmp_path: Path) -> None:
    plain = tmp_path / "plain.toml"
    plain.write_text('[supervisor]\nstate_dir = "run/state"\ninstance = 2\n\n[services.api]\ncommand = "x"\n')
    commented = tmp_path / "commented.toml"  # more than MAX_KEY_PARTS dots: the full check runs
    commented.write_text("# " + "." * (MAX_KEY_PARTS + 1) + '\n[supervisor]\nstate_dir = "run/state"\ninstance = 2\n\n[services.api]\ncommand = "x"\n')
    assert _supervisor_table(plain) == _supervisor_table(commented) == {"state_dir": "run/state", "instance": 2}
