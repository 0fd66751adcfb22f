"""What `svc down` prints about what it did, including a down a later command overtook."""

from __future__ import annotations

import pytest

from supervisord_lite.cli.down_summary import down_lines, overtaken_line


@pytest.mark.parametrize(
    ("result", "names", "lines"),
    [
        ({"stopped": ["web", "api"], "taken_over": []}, (), ["stopped 2 services"]),
        ({"stopped": ["api"], "taken_over": []}, ("api",), ["stopped 1 service: api"]),
        ({"stopped": [], "taken_over": []}, (), ["nothing was running"]),
        ({"stopped": [], "taken_over": []}, ("api", "db"), ["nothing was running of api, db"]),
        ({"stopped": ["web"], "taken_over": ["api", "db"]}, (), ["stopped 1 service"]),
        # things were running: "nothing was running" would be untrue
        ({"stopped": [], "taken_over": ["web", "api"]}, ("api",), ["stopped nothing"]),
        ({"stopped": ["web"]}, (), ["stopped 1 service"]),  # a daemon from before `taken_over`
    ],
)
def test_down_lines(result: dict[str, list[str]], names: tuple[str, ...], lines: list[str]) -> None:
    assert down_lines(result, names) == lines


def test_overtaken_line_names_what_a_later_command_took() -> None:
    line = overtaken_line({"stopped": ["web"], "taken_over": ["api", "db"]})
    assert line == "taken over by a later command before this down was done with them: api, db"
    assert overtaken_line({"stopped": ["web"], "taken_over": []}) is None
    assert overtaken_line({"stopped": ["web"]}) is None
