"""`ready.log` patterns: the core's check (no RE2 in the core) against RE2 itself.

Every pattern the check accepts must compile with RE2 and mean the same to RE2 as to
Python's `re` (on ASCII text: RE2's \\d, \\w, \\s and \\b are ASCII-only, Python's
are Unicode); every construct RE2 lacks is refused with a message saying what to
write. The runtime matcher takes any line in time linear in it.
"""

from __future__ import annotations

import re
import time
import warnings

import pytest
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisord_lite.core.logpattern import MAX_EXPANDED_SIZE, pattern_problem
from supervisord_lite.runtime.logmatch import compile_log_pattern

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False

ACCEPTED = [
    "READY",
    r"^listening on \d+$",
    r"(?i)server (started|ready)",
    r"(?P<port>\d{2,5})/tcp",
    r"[\w.-]+@[\w.-]+",
    r"\bdone\b",
    r"(a+)+$",  # catastrophic for a backtracking engine, linear for RE2
    r"\x41\101\0",
    r"a{0,1000}",
    r"(?:ab{10}){100}",
    r"[]a]|[^]b]|[\]\[-]",
    r"\{\}|a{|a{x}|{}",
    r"(?s:.)(?-i:x)(?m:^$)",
    "",
]

REFUSED = [
    ("(?=ready)ready", "lookahead"),
    ("(?!x)y", "lookahead"),
    ("(?<=a)b", "lookbehind"),
    ("(?<!a)b", "lookbehind"),
    (r"(a)\1", "backreferences (\\1)"),
    ("(?P<n>a)(?P=n)", "backreferences (?P=name)"),
    ("(a)?(?(1)b|c)", "conditionals"),
    ("(?>a+)b", "atomic groups"),
    ("a*+", "possessive"),
    ("a{2}+", "possessive"),
    ("(?#note)a", "comments"),
    ("(?x) a b", "verbose mode"),
    (r"(?a)\w", "the flag (?a)"),
    (r"end\Z", "write $"),
    (r"\u00e9", "write the character itself"),
    (r"[\N{EM DASH}]", "write the character itself"),
    ("\\é", "without the backslash"),
    (r"[\b]", r"write \x08"),
    (r"[\1a]", r"write \x01"),
    ("[[:alpha:]]", "[[:alpha:]]"),
    ("a{,3}", "write {0,3}"),
    ("a{,}", "write *"),
    ("a{01}", "leading zero"),
    ("a{1001}", "counts above 1000"),
    ("(a{100}){11}", "multiply to at most 1000"),
    (".{1000}" * 11, "too large"),
]


@pytest.mark.parametrize("pattern", ACCEPTED)
def test_common_and_edge_patterns_are_accepted_and_compile_with_re2(pattern: str) -> None:
    assert pattern_problem(pattern) is None
    re2.compile(pattern, _RE2_OPTIONS)


@pytest.mark.parametrize(("pattern", "says"), REFUSED)
def test_what_re2_lacks_is_refused_saying_what_to_write(pattern: str, says: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is not None and says in problem and "RE2" in problem, problem


def test_a_syntax_error_is_reported_with_its_position() -> None:
    assert pattern_problem("ready (") == "invalid regular expression 'ready (': missing ), unterminated subpattern at position 6"
    assert "incompatible" in (pattern_problem("(?au)x") or "")  # Python raises ValueError, not re.error, for this one


# pieces of regular expressions, including every construct the check knows about, so
# that random sequences of them reach the corners of both parsers
PIECES = [
    "a", "b", "c", ".", "0", "1", "7", "8", " ", "\t", ":", ",", "-", "<", ">", "=", "!", "#", "é",
    r"\d", r"\D", r"\w", r"\W", r"\s", r"\S", r"\b", r"\B", r"\A", r"\Z", "^", "$",
    r"\t", r"\n", r"\a", r"\f", r"\v", r"\r", r"\x41", r"\0", r"\101", r"\12", r"\1", r"\2",
    r"\u0041", "\\é", r"\_", r"\ ", r"\@", r"\$", r"\.", r"\*", r"\\", r"\-", r"\[", r"\]", r"\{", r"\}", "\\",
    "(", "(", ")", ")", "(?:", "(?P<g>", "(?=", "(?!", "(?<=", "(?<!", "(?P=g)", "(?(1)", "(?>", "(?#c)",
    "(?i)", "(?x)", "(?a)", "(?u)", "(?s:", "(?-i:", "(?i-s:", "|",
    "*", "+", "?", "*?", "+?", "??", "*+", "++", "{", "}", "{}", "{2}", "{0,3}", "{,3}", "{2,}", "{0}", "{01}",
    "{10}", "{100}", "{1000}", "{1001}", "{0,}",
    "[", "]", "[^", "[a-c]", "[]a]", "[^]a]", "[[:alpha:]]", "[:", "&&", "--", "~~", "||",
]
ASCII_TEXTS = ["a", "ab", "abc", "aaa", "a b", "A", "ABC", "b1", "123", "[]", "{}", "a{2}", "\t", "!", "0", "a.b",
               "_", "-", "\\", "(", ")", "a{,3}", ":", "Z", "AAAbbb", "cab", "bca", "x7y", "a\tb", "ready!"]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=10).map("".join))
def test_every_accepted_pattern_compiles_with_re2_and_means_the_same(pattern: str) -> None:
    if pattern_problem(pattern) is not None:
        return
    compiled = re2.compile(pattern, _RE2_OPTIONS)  # raises if the check let through what RE2 refuses
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        python = re.compile(pattern)
    for text in ASCII_TEXTS:
        assert bool(python.search(text)) == bool(compiled.search(text)), (pattern, text)


HEAVY_ATOMS = ["[^a]", r"\W", r"\S", r"[^\W\d]", ".", "[^一-龥]", r"[\s\S]", r"\D", "[^a-zA-Z0-9]", "[^aeiouAEIOU]"]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["", "(?i)", "(?s)", "(?is)"]),
    st.lists(st.tuples(st.sampled_from(HEAVY_ATOMS), st.sampled_from(["{1000}", "{999}", "{500,}", "{100}", "{10}", "", "*"])),
             min_size=1, max_size=40),
)
def test_large_patterns_the_check_accepts_fit_in_re2s_memory_bound(flags: str, parts: list[tuple[str, str]]) -> None:
    pattern = flags + "".join(atom + count for atom, count in parts)
    if pattern_problem(pattern) is None:
        re2.compile(pattern, _RE2_OPTIONS)


def test_the_size_bound_lets_a_long_literal_and_a_thousand_fold_class_through() -> None:
    assert pattern_problem("x" * (MAX_EXPANDED_SIZE // 2)) is None
    assert pattern_problem(r"(?i)[^a-z]{1000}") is None
    assert "too large" in (pattern_problem("x" * (MAX_EXPANDED_SIZE + 1)) or "")


@given(st.text(max_size=60))
def test_the_check_never_raises(pattern: str) -> None:
    problem = pattern_problem(pattern)
    assert problem is None or isinstance(problem, str)


def test_the_matcher_takes_a_catastrophic_line_in_linear_time() -> None:
    matcher = compile_log_pattern(r"(a+)+$", "bait")
    started = time.perf_counter()
    assert not matcher.search("a" * 30 + "!")  # Python's re: minutes
    assert not matcher.search("a" * 16_000 + "!")  # a whole line of the pump's longest
    took = time.perf_counter() - started
    assert matcher.search("ready to serve data")
    assert took < 1.0, f"{took:.3f}s"  # measured well under a millisecond


def test_a_pattern_re2_refuses_matches_nothing_instead_of_raising() -> None:
    matcher = compile_log_pattern("(?=x)x", "api")  # the manifest check refuses it before it gets here
    assert not matcher.search("x")
