"""The command line as argparse builds it: verbs and their options, for the man page and
completion tests, so that what they check follows src/portguard/cli/ by itself."""

import argparse

from portguard.cli import build_parser


def verbs() -> dict[str, argparse.ArgumentParser]:
    """Each verb's own parser."""
    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of PARSER (`-h`, `--help`, `--json`, ...)."""
    return {o for action in parser._actions for o in action.option_strings}


def top_level_options() -> set[str]:
    """The options before the verb: -h, --help, --version."""
    return options(build_parser())


def common_options() -> set[str]:
    """The options of COMMON OPTIONS: every verb's (--debug, -h, --help) and --registry, which
    every verb that reads a registry takes."""
    return set.intersection(*(options(p) for p in verbs().values())) | {"--registry"}


def choices() -> list[tuple[str, str, tuple[str, ...]]]:
    """(verb, option, its choices) for every option with a fixed set of values."""
    return [
        (verb, action.option_strings[-1], tuple(str(c) for c in action.choices))
        for verb, parser in verbs().items()
        for action in parser._actions
        if action.option_strings and action.choices
    ]
