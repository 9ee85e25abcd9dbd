"""The README's configuration table is the one the code generates."""

from pathlib import Path

from fabstir_node.config import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_has_the_settings_table():
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/test" in readme and "scripts/test" in (ROOT / ".ci" / "run").read_text()
