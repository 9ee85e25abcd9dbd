"""The README's configuration table is the one the code generates."""

from pathlib import Path

from fabstir_node.config import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_has_the_settings_table():
    assert markdown_table() in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "scripts/test" in readme and "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_ci_lints_before_it_tests():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/lint" in ci and ci.index("scripts/lint") < ci.index("scripts/test")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "[tool.ruff.lint]" in pyproject and "[tool.mypy]" in pyproject
    assert 'lint = [\n    "ruff==' in pyproject  # pinned: a new release cannot fail CI on unchanged code


def test_settings_defaults_match_the_options_table():
    """Each default is written twice (the table for docs and flags, the attrs class for types): keep them equal."""
    from fabstir_node.config import OPTIONS, Settings

    defaults = Settings()
    drift = {o.name: (o.default, getattr(defaults, o.name)) for o in OPTIONS if getattr(defaults, o.name) != o.default}
    assert drift == {}
