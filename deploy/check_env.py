"""Every MAPPER_* variable that deploy/ sets must be one the code reads.

A manifest that sets a variable no settings class declares configures nothing (the serving pods
once set MAPPER_REGISTRY_ADDRESS where serving read only MAPPER_SERVING_REGISTRY_ADDRESS, and a GPU
base-model variable was silently ignored). Reads the names set in Kubernetes env lists
(`name: MAPPER_X`), YAML mappings (`MAPPER_X: value`, compose and Serve runtime_env), Dockerfile
ENV / RUN assignments and env files (`MAPPER_X=value`), and compares them with
llama_mapper.platform.settings.variables().
Usage: python deploy/check_env.py FILE... ; exit 1 naming each unknown variable with its file and line.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from llama_mapper.platform.settings import variables

_SET = re.compile(
    r"(?:name:\s*[\"']?(MAPPER_[A-Z0-9_]+)[\"']?"  # - name: MAPPER_X / {name: MAPPER_X, ...}
    r"|^\s*-?\s*[\"']?(MAPPER_[A-Z0-9_]+)[\"']?\s*:"  # MAPPER_X: value
    r"|(?<![A-Z0-9_{$])(MAPPER_[A-Z0-9_]+)=)"  # MAPPER_X=value (ENV, RUN, .env)
)


def set_variables(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        code = line.split("#", 1)[0] if not path.name.endswith(".example") else line
        for match in _SET.finditer(code):
            found.append((number, next(g for g in match.groups() if g)))
    return found


def main(argv: list[str]) -> int:
    known = {v.name for v in variables()}
    problems = []
    for name in argv:
        path = Path(name)
        for number, variable in set_variables(path):
            if variable not in known:
                problems.append(
                    f"{path}:{number}: {variable} is read by nothing (see `mapperctl settings`)"
                )
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(argv)} files, {len(problems)} unknown MAPPER_* variables")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
