"""Imports go one way along the architecture (docs/architecture.md): a package may import only
packages on a lower layer. Every ``import`` statement of every module is read from its source,
so imports inside functions (lazy ones) and under ``TYPE_CHECKING`` count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "recstack"

# lowest first; a package may import packages of strictly lower layers (and itself)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("atomic", "typed_fields", "parallel"),
    ("schema",),
    ("vector_io",),
    ("data",),
    ("nn", "pretrain", "datasets"),
    ("models",),
    ("tasks",),
    ("training", "evaluation"),
    ("export", "tuning"),
    ("retrieval",),
    ("serving",),
    ("config",),
    ("workflows",),
    ("cli", "demo"),
)
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def _package(module: str) -> str:
    """``recstack.data.batch`` -> ``data``; ``recstack.cli`` -> ``cli``."""
    return module.split(".")[1]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every recstack import in ``source`` (the text of
    ``module``), wherever it sits: top level, in a function, under ``TYPE_CHECKING``."""
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "recstack":  # from recstack import data
                found += [(node.lineno, f"recstack.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, name))
    return [(line, name) for line, name in found if name.startswith("recstack.")]


def _sources() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if p.parent != SOURCE or p.name != "__init__.py")


def test_every_package_has_a_layer() -> None:
    packages = {_package(_module_name(path)) for path in _sources()}
    missing = sorted(packages - set(LAYER_OF))
    assert not missing, f"add {missing} to LAYERS in {__file__} (and to docs/architecture.md)"


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(SOURCE)))
def test_imports_point_down(path: Path) -> None:
    importer = _package(_module_name(path))
    wrong = []
    for line, module in _imported_modules(path.read_text(), _module_name(path), is_package=path.name == "__init__.py"):
        imported = _package(module)
        if imported == importer or imported not in LAYER_OF or importer not in LAYER_OF:
            continue
        if LAYER_OF[imported] >= LAYER_OF[importer]:
            wrong.append(f"{path.relative_to(SOURCE.parent)}:{line} imports {module} ({importer} may not import {imported})")
    assert not wrong, "\n".join(wrong)


def test_the_scan_sees_lazy_relative_and_type_only_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ..data import batch\n"
        "from . import table\n"
        "if TYPE_CHECKING:\n"
        "    from recstack.models.dssm import TwoTower\n"
        "def f():\n"
        "    import recstack.workflows.train\n"
        "    from recstack import serving\n"
    )
    found = _imported_modules(source, "recstack.nn.probe")
    assert found == [
        (2, "recstack.data"),
        (3, "recstack.nn"),
        (5, "recstack.models.dssm"),
        (7, "recstack.workflows.train"),
        (8, "recstack.serving"),
    ]
