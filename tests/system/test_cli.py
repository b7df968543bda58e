"""The command line as a whole: help, the command table, one-line errors."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from appimg.cli import make_parser, options
from appimg.cli.commands import COMMANDS

from ..helpers import appimg, assert_one_line_error, write_app


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for sub in _subparsers(parser).values():
        yield from _all_parsers(sub)


def test_command_table_is_what_the_parser_knows() -> None:
    # Without a command word: every command of the table, in its order, for the listing.
    assert list(_subparsers(make_parser())) == list(COMMANDS)
    # With one: that command only, built by its module, with a function to run.
    for name in COMMANDS:
        parser = make_parser(name)
        assert list(_subparsers(parser)) == [name]
        assert all(p.get_default("func") for p in _all_parsers(_subparsers(parser)[name])
                   if not _subparsers(p)), name  # fmt: skip


def test_top_level_help_lists_every_command_with_its_summary() -> None:
    # Also when a command word follows the help flag: the top-level help lists them all.
    for argv in (["--help"], ["--help", "inspect"]):
        out = " ".join(appimg(*argv).stdout.split())
        for name, command in COMMANDS.items():
            assert f" {name} {command.summary} " in out, (argv, name)


def test_every_command_explains_itself() -> None:
    for command in COMMANDS:
        out = appimg(command, "--help").stdout
        assert out.startswith("usage: appimg " + command), command


def test_every_json_flag_has_the_one_help_text() -> None:
    seen = 0
    for name in COMMANDS:
        for parser in _all_parsers(make_parser(name)):
            for action in parser._actions:
                if "--json" in action.option_strings:
                    assert action.help == options.JSON.help, parser.prog
                    seen += 1
    assert seen >= 15  # as many as when this test was written: the walk reaches them all


def test_unknown_command_is_a_usage_error() -> None:
    result = appimg("frobnicate", check=False)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_one_line(tmp_path) -> None:
    for command in ("inspect", "verify", "ls", "mount", "run", "install"):
        assert_one_line_error(appimg(command, tmp_path / "none.appimg", check=False))


# -- papercuts a new packager met: each message names the thing and the fix -----------------


def test_a_command_typo_names_the_nearest_command() -> None:
    result = appimg("instal", "x.appimg", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "did you mean 'install'?" in result.stderr


def test_pack_into_a_missing_directory_names_it(tmp_path) -> None:
    write_app(tmp_path / "app")
    result = appimg("pack", tmp_path / "app", "-o", tmp_path / "missing" / "x.appimg", check=False)
    assert_one_line_error(result)
    assert f"no such directory: {tmp_path / 'missing'}" in result.stderr
    assert ".appimg-pack-" not in result.stderr  # not an internal temporary name


def test_manifest_errors_name_the_file_and_the_fix(tmp_path) -> None:
    app = write_app(tmp_path / "app")
    toml = app / "appimg.toml"
    text = toml.read_text()
    toml.write_text("\n".join(line for line in text.splitlines() if not line.startswith("id ")))
    result = appimg("pack", app, "-o", tmp_path / "x.appimg", check=False)
    assert_one_line_error(result)
    assert f"{toml}: id: missing" in result.stderr
    toml.write_text(text.replace('version = "1.0"', "version = 1.0"))
    result = appimg("pack", app, "-o", tmp_path / "x.appimg", check=False)
    assert_one_line_error(result)
    assert f"{toml}: version:" in result.stderr and 'quote it (version = "1.0")' in result.stderr
    toml.write_text(text + "entrypont = 1\n")
    result = appimg("pack", app, "-o", tmp_path / "x.appimg", check=False)
    assert f"{toml}: unknown key(s) entrypont" in result.stderr


def test_cat_of_a_missing_file_names_the_whole_path(tmp_path) -> None:
    write_app(tmp_path / "app")
    appimg("pack", tmp_path / "app", "-o", tmp_path / "x.appimg")
    for path in ("bin/nosuch", "usr/bin/nosuch"):
        result = appimg("cat", tmp_path / "x.appimg", path, check=False)
        assert_one_line_error(result)
        assert result.stderr.strip().endswith(f"no such file or directory in image: {path}")
