"""`mapperctl eval run --rules-only` end to end through the CLI hook (no registry needed)."""

import argparse
import json

import pytest

from llama_mapper.cli import evaluation as cli
from llama_mapper.domain.errors import InvalidArgument
from tests.support.eval_cases import build_eval_set


def _parse(argv):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_eval_run_rules_only_writes_a_report(tmp_path, capsys):
    eval_dir = build_eval_set(tmp_path / "set")
    args = _parse(
        [
            "eval",
            "--reports-dir",
            str(tmp_path / "runs"),
            "run",
            "--rules-only",
            "--eval-set",
            str(eval_dir),
            "--json",
            "--no-robustness",
        ]
    )
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quality"]["exact_set_accuracy"] == 1.0
    assert report["recorded_in_registry"] is False
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert {"report.json", "summary.md", "cases.jsonl", "run.json", "reliability.png"} <= {
        p.name for p in run_dir.iterdir()
    }


def test_eval_run_needs_a_version_or_rules_only(tmp_path):
    args = _parse(["eval", "--reports-dir", str(tmp_path), "run"])
    with pytest.raises(InvalidArgument, match="--version"):
        args.func(args)
