"""``appimg run FILE|ID ...`` is parsed without building the parser (a launch-time
shortcut, :func:`appimg.cli._plain_run`): it must give what argparse gives."""

from __future__ import annotations

import pytest

from appimg.cli import _plain_run, _split_passthrough, make_parser

SHORTCUT = [
    ["run", "org.example.App"],
    ["run", "org.example.App", "--", "--verbose", "two words"],
    ["run", "./App.appimg", "--command", "greet", "--", "%U"],
    ["run", "App.appimg", "--command=greet"],
    ["run", "org.example.App", "--strict", "--no-fuse", "--allow-untrusted"],
    ["run", "org.example.App", "--socket=wayland", "--nofilesystem", "home", "x"],
    ["run", "org.example.App", "-h"],
    ["run", "org.example.App", "--help", "--", "--help"],
    ["run", "org.example.App", "--command"],
    ["run", "run", "run"],
]
PARSER = [
    ["run"],
    ["run", "--strict", "org.example.App"],
    ["run", "-h"],
    ["--debug", "run", "org.example.App"],
    ["inspect", "org.example.App"],
    ["run", "--", "org.example.App"],
]


@pytest.mark.parametrize("argv", SHORTCUT, ids=" ".join)
def test_shortcut_gives_what_argparse_gives(argv: list[str]) -> None:
    words, _ = _split_passthrough(argv)
    shortcut = _plain_run(words)
    assert shortcut is not None
    assert vars(shortcut) == vars(make_parser("run").parse_args(words))


@pytest.mark.parametrize("argv", PARSER, ids=" ".join)
def test_everything_else_goes_to_argparse(argv: list[str]) -> None:
    assert _plain_run(_split_passthrough(argv)[0]) is None
