"""Production code finds the devstack as a plugin and never imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from workers import plugins
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_of_workers_imports_the_devstack() -> None:
    found = []
    for path in (ROOT / "workers").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("devstack")]
    assert found == []


def test_the_devstack_plugin_adds_its_commands_and_adapter() -> None:
    from workers.cli import parser

    commands = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"run", "up", "chaos", "scale", "soak", "send", "simulator"} <= set(commands)
    assert plugins.hooks("adapt_kafka_clients")


def test_a_plugin_left_out_of_the_install_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    missing = EntryPoint("gone", "gone_package.plugin", plugins.GROUP)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [missing])
    plugins.plugins.cache_clear()
    try:
        assert plugins.plugins() == ()
        with pytest.raises(RuntimeError, match="KAFKA_EMBEDDED"):
            plugins.adapt_kafka_clients(Settings(kafka_embedded=True))
    finally:
        plugins.plugins.cache_clear()
