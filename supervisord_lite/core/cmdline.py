"""The manifest option as every command line spells it: ``-f FILE``, ``--manifest FILE``
and ``--manifest=FILE``. The console script's quick path and the daemon's entry point read
their command lines without a parser library (each would cost them its start-up time or
memory); this is the part of that reading they share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

MANIFEST_FLAGS = ("-f", "--manifest")


class UnusableManifestOption(ValueError):
    """-f with no file after it, an empty one, or an option where the file belongs: for
    the full parser to word."""


def manifest_options(argv: Iterable[str]) -> Iterator[tuple[str | None, str]]:
    """Each word of ``argv`` as ``(file, word)``: the manifest file a manifest option gives
    (its value taken with it), else None and the word itself.

    :raises UnusableManifestOption: (while iterating) see the class"""
    rest = iter(argv)
    for word in rest:
        if word in MANIFEST_FLAGS:
            value = next(rest, None)
        elif word.startswith("--manifest="):
            value = word.removeprefix("--manifest=")
        else:
            yield None, word
            continue
        if not value or value.startswith("-"):
            raise UnusableManifestOption(word)
        yield value, word
