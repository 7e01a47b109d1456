"""`mapperctl registry ...` against a real registry server (SQLite + local files)."""

from __future__ import annotations

import argparse

import pytest

from llama_mapper.cli import registry as cli
from llama_mapper.domain.errors import FailedPrecondition, InvalidArgument
from llama_mapper.registry.client import RegistryClient
from tests.support.registry import TOKEN, lineage, make_adapter

pytestmark = pytest.mark.integration


@pytest.fixture
def address(registry_address):
    return registry_address


def mapperctl(address: str, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mapperctl")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["registry", "--address", address, "--token", TOKEN, *argv])
    return args.func(args)


def test_list_show_promote_rollback_history_targets(address, tmp_path, capsys):
    with RegistryClient(address, token=TOKEN, actor="trainer") as client:
        for i in range(2):
            client.register_directory(
                "mapper",
                make_adapter(tmp_path / f"a{i}"),
                lineage=lineage(),
                display_name=f"mapper-v{i + 1}",
            )
        client.record_metrics(
            "mapper", 2, {"accuracy": 0.94, "f1_score": 0.92, "latency_p95_ms": 45}
        )
    capsys.readouterr()

    assert mapperctl(address, "list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["model", "latest", "versions", "aliases"]
    assert "mapper" in out

    assert mapperctl(address, "promote", "mapper", "1", "--reason", "first champion") == 0
    assert mapperctl(address, "promote", "mapper", "2", "--reason", "better f1") == 0
    assert "champion: 1 -> 2" in capsys.readouterr().out

    assert mapperctl(address, "list", "mapper") == 0
    rows = capsys.readouterr().out.splitlines()
    assert "champion" in rows[3] and rows[3].split()[0] == "2"

    assert mapperctl(address, "show", "mapper", "champion") == 0
    out = capsys.readouterr().out
    assert (
        "mapper v2  mapper-v2" in out
        and "accuracy=0.94" in out
        and "adapter_model.safetensors" in out
    )
    # The spelling, `show MODEL --version N`, is the same command; naming none or both
    # versions is a usage error.
    assert mapperctl(address, "show", "mapper", "--version", "2") == 0
    assert "mapper v2  mapper-v2" in capsys.readouterr().out
    assert mapperctl(address, "show", "mapper") == 2
    assert "name one version" in capsys.readouterr().err

    assert mapperctl(address, "rollback", "mapper", "--reason", "p95 regression") == 0
    assert "champion: 2 -> 1 (rollback)" in capsys.readouterr().out

    assert mapperctl(address, "history", "mapper", "--subject", "champion") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[6:8] for line in lines[2:]] == [["-", "1"], ["1", "2"], ["2", "1"]]
    assert "p95 regression" in lines[-1]

    assert (
        mapperctl(
            address,
            "targets",
            "mapper",
            "--profile",
            "cpu-2core",
            "--set",
            "p95_latency_ms=250",
            "--set",
            "min_accuracy=0.9",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "cpu-2core" in out and "250" in out and "0.9" in out

    with pytest.raises(InvalidArgument):
        mapperctl(address, "targets", "mapper", "--profile", "cpu-2core", "--set", "speed=3")
    with pytest.raises(FailedPrecondition):
        mapperctl(address, "rollback", "mapper", "--alias", "challenger", "--reason", "x")
