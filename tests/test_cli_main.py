"""The top-level `keyside` entry point: how it turns handler failures into exit codes."""

from __future__ import annotations

import argparse

import pytest

from keyside import cli
from keyside.errors import KeysideError


def _run_with_handler(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> int:
    def handler(args: argparse.Namespace) -> int:
        raise error

    original_build = cli.build_parser

    def build_parser() -> argparse.ArgumentParser:
        parser = original_build()
        parser.set_defaults(handler=handler)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_parser)
    return cli.main([])


@pytest.mark.parametrize(("error", "expected_code", "expected_text"), [
    (KeysideError("The vault is locked.", reason="vault_locked", fix="Unlock it."), 1,
     "keyside: error: The vault is locked. Fix: Unlock it."),
    (KeysideError("--browser and --headless exclude each other.", reason="usage"), 2, "exclude each other"),
    (EOFError(), 1, "input ended before a value was entered; nothing was changed"),
    (KeyboardInterrupt(), 130, "keyside: interrupted"),
], ids=["keyside-error", "usage-error", "end-of-input", "interrupt"])
def test_main_maps_errors(monkeypatch, capsys, error, expected_code, expected_text):
    code = _run_with_handler(monkeypatch, error)
    captured = capsys.readouterr()
    assert code == expected_code
    assert expected_text in captured.err
    assert "Traceback" not in captured.err


def test_main_without_command_prints_usage(capsys):
    assert cli.main([]) == 2
    assert "usage: keyside" in capsys.readouterr().err
