"""The manifest's files as one document: each parsed, merged in order, and every key
placed back in the file and line it came from (for problems and ``svc config --origin``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from supervisord_lite.core.locate import KeyLocator, KeyPath, ProblemLog, key_path
from supervisord_lite.core.overrides import Origins, merge_documents
from supervisord_lite.core.problems import Problem
from supervisord_lite.core.toml_source import parse_toml


class Source(NamedTuple):
    """One file of the manifest: its name as the user gave it, and its text."""

    file: str
    text: str


@dataclass
class Merged:
    """The merged document, where each key came from, and each file's locator."""

    data: dict[str, Any]
    origins: Origins
    locators: dict[str, KeyLocator]

    def source_of(self, path: KeyPath) -> tuple[str, KeyLocator]:
        file = self.origins.file_of(path)
        return file, self.locators[file]

    def problem_log(self) -> ProblemLog:
        main = self.origins.main
        return ProblemLog(main, self.locators[main], source_of=self.source_of)

    def where(self, path: KeyPath) -> tuple[str, int | None]:
        """The file and line of the value at ``path``."""
        file, locator = self.source_of(path)
        return file, locator.find(path)[0]


def merge_sources(sources: list[Source]) -> Merged | list[Problem]:
    """The sources parsed and merged (the first is the main manifest), or the syntax
    problems of every file that does not parse."""
    documents, problems = [], []
    for source in sources:
        data = parse_toml(source.text, source.file)
        if isinstance(data, Problem):
            problems.append(data)
        else:
            documents.append((source.file, data))
    if problems:
        return problems
    data, origins = merge_documents(documents)
    locators = {source.file: KeyLocator(source.text) for source in sources}
    return Merged(data, origins, locators)


def place(problems: list[Problem], merged: Merged) -> list[Problem]:
    """Problems found on a loaded manifest (which name only the service and key), placed
    in the file and line their key came from."""
    out = []
    for problem in problems:
        if problem.line is None:
            where = key_path(problem)
            if where:
                file, locator = merged.source_of(where)
                line, col = locator.find(where)
                problem = replace(problem, file=file, line=line, col=col)
        out.append(problem)
    return out


def leaf_paths(data: Any, path: KeyPath = ()) -> list[tuple[KeyPath, Any]]:
    """Every value that is not a table, with its key path, in document order."""
    if not isinstance(data, dict):
        return [(path, data)]
    out: list[tuple[KeyPath, Any]] = []
    for key, value in data.items():
        out += leaf_paths(value, (*path, key))
    return out
