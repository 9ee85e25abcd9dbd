"""docs/protocol.md keeps the one list of error codes that the code has."""

from pathlib import Path

from fabstir_node.errors import ErrorCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_every_error_code_is_documented():
    text = DOC.read_text()
    missing = [code.value for code in ErrorCode if f"`{code.value}`" not in text]
    assert missing == []
