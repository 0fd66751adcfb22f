"""The manifest option as the console script's quick path and the daemon's entry read it."""

from __future__ import annotations

import pytest

from supervisord_lite.core.cmdline import UnusableManifestOption, manifest_options


def test_each_spelling_gives_its_file_and_other_words_pass_through() -> None:
    argv = ["-f", "a.toml", "status", "--manifest", "b.toml", "--json", "--manifest=c d.toml"]
    assert list(manifest_options(argv)) == [
        ("a.toml", "-f"), (None, "status"), ("b.toml", "--manifest"), (None, "--json"), ("c d.toml", "--manifest=c d.toml"),
    ]


@pytest.mark.parametrize("argv", [["-f"], ["-f", ""], ["--manifest", "-x"], ["--manifest="], ["up", "-f", "--json"]])
def test_a_missing_empty_or_dashed_file_is_unusable(argv: list[str]) -> None:
    with pytest.raises(UnusableManifestOption):
        list(manifest_options(argv))
