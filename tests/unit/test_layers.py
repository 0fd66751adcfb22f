"""The package's layers, enforced: who may import whom.

    core      pure model and rules            imports nothing of ours but core
    host      facts about this machine        core
    runtime   the running supervisor (anyio)  core, host
    daemon    the daemon process's edges      core, host, runtime
    cli       the `svc` command               core, host, export (never runtime or daemon)
    export    rendering for other engines     core

Every import is checked, at module level and inside functions, so a lazy import
cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "supervisord_lite"

ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "host": {"core", "host"},
    "runtime": {"core", "host", "runtime"},
    "daemon": {"core", "host", "runtime", "daemon"},
    "cli": {"core", "host", "cli", "export"},
    "export": {"core", "export"},
}
# third-party libraries a layer must not load (the pure core stays importable anywhere;
# the CLI stays fast and small)
FORBIDDEN_LIBRARIES: dict[str, set[str]] = {
    "core": {"anyio", "psutil", "prometheus_client", "structlog", "click", "rich", "re2"},
    "host": {"anyio", "prometheus_client", "structlog", "click", "rich"},
    "cli": {"anyio", "prometheus_client", "structlog"},
    "export": {"anyio", "psutil", "prometheus_client", "structlog"},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer_of(path: Path) -> str | None:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module name ``path`` imports, resolved to absolute dotted names."""
    return _imports_of(path.read_text(), ["supervisord_lite", *path.relative_to(PACKAGE).parent.parts])


def _imports_of(source: str, package_parts: list[str]) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from supervisord_lite import runtime` names a layer in the imported names
            if module == "supervisord_lite":
                found.extend((node.lineno, f"supervisord_lite.{alias.name}") for alias in node.names)
    return found


def test_every_module_belongs_to_a_layer_or_is_an_entry_point() -> None:
    loose = {p.name for p in PACKAGE.glob("*.py")}
    assert loose == {"__init__.py", "__main__.py", "demo.py"}, loose
    layers = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert layers == set(ALLOWED)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_respect_the_layers(path: Path) -> None:
    layer = _layer_of(path)
    if layer is None:
        return  # the entry points compose the layers
    problems = []
    for line, module in _imports(path):
        parts = module.split(".")
        if parts[0] == "supervisord_lite" and len(parts) > 1 and parts[1] in ALLOWED:
            if parts[1] not in ALLOWED[layer]:
                problems.append(f"{path.name}:{line} imports {module} ({layer} may import only {sorted(ALLOWED[layer])})")
        elif parts[0] in FORBIDDEN_LIBRARIES.get(layer, set()):
            problems.append(f"{path.name}:{line} imports {module}, which the {layer} layer must not load")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_lazy_and_relative_imports() -> None:
    """A lazy or relative import must be seen, or a layer could be crossed unseen."""
    source = (
        "def f():\n"
        "    from ..runtime import supervisor\n"
        "    import psutil\n"
        "class C:\n"
        "    def g(self):\n"
        "        from supervisord_lite import daemon\n"
    )
    found = {m for _line, m in _imports_of(source, ["supervisord_lite", "cli"])}
    assert {"supervisord_lite.runtime", "psutil", "supervisord_lite.daemon"} <= found


def test_the_core_imports_without_io_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, pkgutil, importlib, supervisord_lite.core\n"
        "for m in pkgutil.iter_modules(supervisord_lite.core.__path__):\n"
        "    importlib.import_module('supervisord_lite.core.' + m.name)\n"
        "print(sorted(m for m in ('anyio', 'psutil', 'prometheus_client', 'structlog', 'click') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
