"""DESIGN.md: the library never imports Dagster (a notebook or torchrun user imports it bare)."""

import subprocess
import sys

from conftest import REPO

IMPORT_ALL = """
import importlib, pkgutil, sys, geoconcept
names = [m.name for m in pkgutil.walk_packages(geoconcept.__path__, "geoconcept.")
         if not m.name.endswith("__main__")]
for n in names:
    importlib.import_module(n)
bad = sorted(m for m in sys.modules if m.split(".")[0] == "dagster" or m.startswith("dagster_"))
assert not bad, bad
print(len(names))
"""


def test_every_library_module_imports_without_dagster():
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=REPO, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 5


def test_library_source_has_no_dagster_import_lines():
    offenders = []
    for path in (REPO / "geoconcept").rglob("*.py"):
        lines = path.read_text().splitlines()
        if any(line.lstrip().startswith(("import dagster", "from dagster")) for line in lines):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def _imported_top_levels(path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_imports_run_pipelines_then_assets_then_library():
    """DESIGN.md: `pipelines → assets → geoconcept`; nothing in assets/ imports pipelines/."""
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "assets").rglob("*.py"))
        if "pipelines" in _imported_top_levels(path)
    ]
    assert offenders == []
    library = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "geoconcept").rglob("*.py"))
        if _imported_top_levels(path) & {"pipelines", "assets"}
    ]
    assert library == []
