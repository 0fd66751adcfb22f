"""How ``svc export`` runs a service in a container: the top-level ``[export]`` and
each ``[services.NAME.export]``, merged into the model's ``ExportSpec``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from supervisord_lite.core.locate import ProblemLog
from supervisord_lite.core.model import ExportSpec
from supervisord_lite.core.tables import TableReader
from supervisord_lite.core.values import Placeholders, check_arguments, env_table, resolve_path, split_command
from supervisord_lite.core.wording import describe

EXPORT_KEYS = ("image", "build", "command", "env")
EXPORT_DEFAULT_KEYS = ("image", "build", "env")
# An image reference as Docker reads it: [registry[:port]/]path[:tag][@digest], path lowercase.
_IMAGE_PATH = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_IMAGE_PATH}(?:/{_IMAGE_PATH})*(?::\w[\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?"
)


@dataclass(frozen=True, slots=True)
class ExportDefaults:
    """The top-level ``[export]`` table, placeholders not yet expanded."""

    image: str | None = None
    build: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def export_defaults_section(problems: ProblemLog, data: Any) -> ExportDefaults:
    """The top-level ``[export]``: image, build and env every service starts from.

    It serves every service, so only ``{name}`` and ``{state_dir}`` may appear in it.
    """
    if data is None:
        return ExportDefaults()
    if not isinstance(data, dict):
        example = '{ image = "team/{name}:latest" }'
        problems.error(("export",), f"expected a table such as {example}, got {describe(data)}")
        return ExportDefaults()
    t = TableReader(problems, ("export",), data, EXPORT_DEFAULT_KEYS)
    defaults = ExportDefaults(
        image=t.optional_string("image"),
        build=t.optional_string("build"),
        env=MappingProxyType(env_table(problems, t.at("env"), data["env"]) if "env" in data else {}),
    )
    values = [(t.at(key), text) for key in ("image", "build") if (text := getattr(defaults, key))]
    values += [((*t.at("env"), key), text) for key, text in defaults.env.items()]
    for path, text in values:
        if re.search(r"(?<!\{)\{port\}", text):
            problems.error(
                path,
                f'"{{port}}" in "{text}" differs per service and some have none; '
                "use {name}, or set it in [services.NAME.export]",
            )
        else:
            Placeholders(problems, {"name": "name", "state_dir": "state_dir"}).expand(path, text)
    return defaults


def service_export(
    problems: ProblemLog, t: TableReader, defaults: ExportDefaults, subst: Placeholders, base: Path
) -> ExportSpec:
    """``[services.NAME.export]`` (read from the service's table ``t``) over the top-level ``[export]``.

    A service that sets image or build takes neither from the top level: mixing one
    service's image with everyone's build context would build the wrong thing. Its
    env goes over the top-level env.
    """
    raw = t.table("export")
    path = t.at("export")
    e = TableReader(problems, path, raw, EXPORT_KEYS) if raw is not None else None
    own = {key: value for key in ("image", "build") if e and (value := e.optional_string(key)) is not None}
    inherited = not own
    origin = " (from the top-level [export])" if inherited else ""

    def quietly(text: str) -> str:
        """A top-level value for this service; its problems were reported at the top level."""
        return Placeholders(ProblemLog(problems.file, problems.locator), subst.values, subst.variables, subst.references).expand((), text)

    def value(key: str) -> str | None:
        if not inherited:
            text = own.get(key)
            return None if text is None else subst.expand((*path, key), text)
        text = getattr(defaults, key)
        return None if text is None else quietly(text)

    image = value("image")
    if image is not None and not IMAGE_REFERENCE.fullmatch(image):
        problems.error(
            (*path, "image"),
            f'"{image}"{origin} is not an image reference such as "postgres:16" or '
            '"registry.example.com/team/app:1.2" (lowercase, no spaces)',
        )
    build = None
    if (context := value("build")) is not None:
        if not context.strip():
            problems.error((*path, "build"), f"the build context{origin} is empty")
        elif "\0" in context:
            problems.error((*path, "build"), f"the build context{origin} contains a NUL byte")
        else:
            build = resolve_path(base, context)

    command: tuple[str, ...] | None = None
    env = {key: quietly(text) for key, text in defaults.env.items()}
    if raw is not None:
        if "command" in raw:
            if raw["command"] in ("", []):
                command = ()  # the image's own command
            else:
                argv = split_command(problems, (*path, "command"), raw["command"])
                expanded = tuple(subst.expand((*path, "command"), arg) for arg in argv or ())
                command = check_arguments(problems, (*path, "command"), expanded)
        if "env" in raw:
            own_env = env_table(problems, (*path, "env"), raw["env"])
            env |= {key: subst.expand((*path, "env", key), text) for key, text in own_env.items()}
    return ExportSpec(image=image, build=build, command=command, env=MappingProxyType(env))
