"""Text the registry stores is checked before the database sees it, the same on every backend:
NUL and over-long values are INVALID_ARGUMENT naming the field (PostgreSQL's driver refuses them
with an error the servicer would answer INTERNAL; SQLite keeps them)."""

from __future__ import annotations

import pytest

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.registry.schema import ModelRow, VersionRow, check_text
from tests.support.registry import TOKEN, lineage, make_adapter, start_registry


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (ModelRow(name="m\x00"), "models.name: text must not contain NUL"),
        (ModelRow(name="m" * 129), "models.name: 129 characters; the limit is 128"),
        (VersionRow(description="a\x00b"), "description: text must not contain NUL"),
        (VersionRow(files=[{"path": "x\x00"}]), "files: text must not contain NUL"),
    ],
)
def test_each_row_is_checked_before_the_database(row, message):
    with pytest.raises(InvalidArgument, match=message):
        check_text(None, None, row)


def test_over_the_wire_nul_and_over_long_text_are_invalid_argument(tmp_path):
    from llama_mapper.registry.client import RegistryClient

    server, address = start_registry(tmp_path / "registry", token=TOKEN)
    try:
        with RegistryClient(address, token=TOKEN) as client:
            adapter = make_adapter(tmp_path / "adapter")
            for kwargs in ({"description": "bad\x00text"}, {"display_name": "d" * 257}):
                with pytest.raises(InvalidArgument, match="versions"):
                    client.register_directory("mapper", adapter, lineage=lineage(), **kwargs)
            created = client.register_directory("mapper", adapter, lineage=lineage())
            assert created.version.version == 1  # nothing half-written by the refusals
    finally:
        server.stop(0)
