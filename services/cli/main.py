"""mapperctl: the command-line entry point."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("mapperctl: under construction", file=sys.stderr)
    return 2
