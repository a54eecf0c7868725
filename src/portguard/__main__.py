"""Entry point: the free path of `check` first, with builtin modules only; then the full CLI."""

import sys


def main() -> int:
    from portguard.hotpath import run  # noqa: PLC0415 - nothing heavy before we know we need it

    code = run(sys.argv[1:])
    if code is not None:
        return code
    from portguard.cli import main as full  # noqa: PLC0415

    return full()


if __name__ == "__main__":
    sys.exit(main())
