"""scripts/check_unsafe_loads.py refuses pickle, unsafe torch.load / yaml.load, eval and exec."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_unsafe_loads.py"
_spec = importlib.util.spec_from_file_location("check_unsafe_loads", SCRIPT)
checker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(checker)


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("import torch\ntorch.load('x.pt')", "weights_only=True"),
        ("import torch\ntorch.load('x.pt', weights_only=False)", "weights_only=True"),
        ("import torch as t\nt.load('x.pt', map_location='cpu')", "weights_only=True"),
        ("from torch import load\nload('x.pt')", "weights_only=True"),
        ("import pickle", "imports pickle"),
        ("import cPickle", "imports cPickle"),
        ("import dill as d", "imports dill"),
        ("from pickle import loads", "imports from pickle"),
        ("import yaml\nyaml.load(text)", "SafeLoader"),
        ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "SafeLoader"),
        ("import yaml\nyaml.load(text, yaml.FullLoader)", "SafeLoader"),
        ("from yaml import load\nload(text)", "SafeLoader"),
        ("import yaml\nyaml.unsafe_load(text)", "arbitrary objects"),
        ("eval('1 + 1')", "calls eval"),
        ("exec(code)", "calls exec"),
        ("import builtins\nbuiltins.eval(s)", "calls builtins.eval"),
    ],
)
def test_each_unsafe_pattern_is_refused_with_its_line(source, needle):
    findings = checker.check_source(source)
    assert len(findings) == 1, findings
    line, what = findings[0]
    assert needle in what and line == source.count("\n") + 1


@pytest.mark.parametrize(
    "source",
    [
        "import torch\ntorch.load('x.pt', weights_only=True)",
        "import torch\ntorch.load('x.pt', map_location='cpu', weights_only=True)",
        "import yaml\nyaml.safe_load(text)",
        "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
        "import yaml\nyaml.load(text, Loader=yaml.CSafeLoader)",
        "model.eval()",
        "self.peft_model.eval()",
        "json.loads(text)",
        "from safetensors.torch import load_file\nload_file('a.safetensors')",
        "# pickle is mentioned only in a comment\nx = 'import pickle'",
    ],
)
def test_safe_code_passes(source):
    assert checker.check_source(source) == []


def test_main_names_file_and_line_and_fails(tmp_path, capsys):
    (tmp_path / "ok.py").write_text("import yaml\nyaml.safe_load('a: 1')\n")
    (tmp_path / "bad.py").write_text("import json\n\nimport pickle\n")
    assert checker.main([str(tmp_path / "ok.py")]) == 0
    assert checker.main([str(tmp_path)]) == 1
    assert "bad.py:3: imports pickle" in capsys.readouterr().out


def test_the_repository_is_clean():
    assert checker.main([]) == 0
