"""docs/protocol.md is generated from the schemas and must match them."""

from pathlib import Path

from agentd.protocol.docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_protocol_doc_matches_schemas():
    assert DOC.read_text() == render(), "docs/protocol.md is stale: run `make docs` (python -m agentd.protocol.docs > docs/protocol.md)"


def test_every_command_is_documented():
    from agentd.protocol import COMMANDS

    text = DOC.read_text()
    for name in COMMANDS:
        assert f"### `{name}`" in text
