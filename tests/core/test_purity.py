"""The consensus core is pure (SPEC §7): no I/O, clock, threads or randomness of its own."""

from __future__ import annotations

import ast
from pathlib import Path

import raftkvd.raft

FORBIDDEN = {"zmq", "lmdb", "asyncio", "threading", "socket", "os", "time", "random", "msgpack", "logging"}
CORE_DIR = Path(raftkvd.raft.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, absolute names; relative imports resolved inside raftkvd.raft."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add("raftkvd.raft" + (f".{node.module}" if node.module else ""))
            elif node.module:
                names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
            names.add("<dynamic __import__>")
    return names


def test_core_imports_no_io_clock_threads_or_randomness() -> None:
    files = sorted(CORE_DIR.glob("*.py"))
    assert len(files) >= 8
    offenders = {}
    for path in files:
        bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN or m.startswith("<")}
        if bad:
            offenders[path.name] = sorted(bad)
    assert not offenders, f"the core must stay pure: {offenders}"


def test_core_imports_nothing_of_the_daemon() -> None:
    for path in sorted(CORE_DIR.glob("*.py")):
        for module in imported_modules(path):
            if module.startswith("raftkvd"):
                assert module.startswith("raftkvd.raft"), f"{path.name} imports {module}"


def test_the_purity_check_sees_forbidden_imports() -> None:
    """A check that cannot fail is a defect: it must flag each forbidden import style."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.py"
        probe.write_text("import os\nfrom time import monotonic\nimport random as r\nfrom . import core\n")
        found = imported_modules(probe)
    assert {"os", "time", "random", "raftkvd.raft"} <= found
