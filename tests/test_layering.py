"""The layers import one way (STYLE.md): protocols is pure, supervisor knows no telephony."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FORBIDDEN = {
    "protocols": {"trio", "httpx", "httpx2", "trio_websocket", "hypercorn", "anthropic", "boto3",
                  "anyio", "asyncio", "socket", "actors", "supervisor", "centralita"},
    "supervisor": {"actors", "protocols", "centralita", "httpx", "trio_websocket", "hypercorn"},
    "actors": {"centralita", "hypercorn"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downward(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imports(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_the_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("import trio\nfrom httpx import AsyncClient\n")
    assert _imports(bad) & FORBIDDEN["protocols"] == {"trio", "httpx"}
