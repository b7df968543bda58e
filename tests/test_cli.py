"""The command line as a whole: help, the command table, one-line errors."""

from __future__ import annotations

import argparse

from appimg.cli import TOPIC_COMMANDS, TOPICS, make_parser

from .helpers import appimg, assert_one_line_error


def _choices(parser: argparse.ArgumentParser) -> set[str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_topic_table_matches_what_topics_register() -> None:
    assert _choices(make_parser()) == {c for t in TOPICS for c in TOPIC_COMMANDS[t]}
    for topic in TOPICS:
        assert _choices(make_parser(TOPIC_COMMANDS[topic][0])) == set(TOPIC_COMMANDS[topic])


def test_every_command_explains_itself() -> None:
    for commands in TOPIC_COMMANDS.values():
        for command in commands:
            out = appimg(command, "--help").stdout
            assert out.startswith("usage: appimg " + command), command
    assert "COMMAND" in appimg("--help").stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = appimg("frobnicate", check=False)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_one_line(tmp_path) -> None:
    for command in ("inspect", "verify", "ls", "mount", "run", "install"):
        assert_one_line_error(appimg(command, tmp_path / "none.appimg", check=False))
