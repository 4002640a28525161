"""One settings table for every option range, default and choice; messages name options, the CLI words them."""

from __future__ import annotations

import argparse
import ast
import logging
import math
import re
from pathlib import Path

import pytest
from conftest import ROOT

from umedprotect import cli
from umedprotect.cli import build_parser, option_message
from umedprotect.cli.protect import settings_from
from umedprotect.errors import InputError
from umedprotect.protector_file import check_config_values
from umedprotect.settings import OPTIONS, ProtectionSettings

PROTECTION_COMMANDS = ("protect", "protect-dataset")
LIBRARY = ROOT / "UMedProtect" / "umedprotect"
RANGED = [name for name, option in OPTIONS.items() if option.low is not None]


def subcommand(name: str) -> argparse.ArgumentParser:
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return subparsers.choices[name]


def actions(command: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in subcommand(command)._actions}


def required_args(command: str) -> list[str]:
    return {"protect": ["img.nii.gz", "mask.nii.gz", "-o", "out.nii.gz"], "protect-dataset": ["in", "-o", "out"]}[
        command
    ]


def edge_values(name: str) -> list[tuple[object, bool]]:
    """Values at and just beyond the ends of an option's range, with whether the table accepts them."""
    option = OPTIONS[name]
    step = (lambda v, d: v + d) if option.kind is int else (lambda v, d: math.nextafter(v, v + d))
    low, high = option.kind(option.low), option.kind(option.high)
    return [
        (low, not option.low_open),
        (step(low, -1), False),
        (step(low, 1), True),
        (high, True),
        (step(high, 1), False),
    ]


@pytest.mark.parametrize("command", PROTECTION_COMMANDS)
@pytest.mark.parametrize("name", sorted(set(OPTIONS)))
def test_every_protection_option_takes_its_flag_type_default_and_choices_from_the_table(command, name):
    option = OPTIONS[name]
    action = actions(command)[name]
    assert action.option_strings == [option.flag]
    assert (action.type, action.default, action.choices, action.help) == (
        option.kind,
        option.default,
        option.choices,
        option.help,
    )


@pytest.mark.parametrize("command", PROTECTION_COMMANDS)
@pytest.mark.parametrize("name", RANGED)
def test_the_command_line_accepts_exactly_the_range_of_the_table(command, name):
    parser = subcommand(command)
    for value, accepted in edge_values(name):
        args = parser.parse_args([*required_args(command), f"{OPTIONS[name].flag}={value!r}"])
        if accepted:
            assert getattr(settings_from(args), name) == value
        else:
            with pytest.raises(InputError) as error:
                settings_from(args)
            assert error.value.option == name
            assert option_message(error.value).startswith(f"{OPTIONS[name].flag} {value:g} is out of range")


@pytest.mark.parametrize("command", ["fit", "evaluate"])
def test_fit_and_evaluate_take_the_device_option_from_the_table(command):
    device = actions(command)["device"]
    assert (device.option_strings, device.choices, device.default) == (["--device"], OPTIONS["device"].choices, "auto")


@pytest.mark.parametrize("name", ["epsilon", "band_radius"])
def test_protector_files_and_fit_accept_the_range_of_the_table(name):
    fit = actions("fit")[name]
    assert fit.option_strings == [OPTIONS[name].flag] and fit.type is OPTIONS[name].kind
    for value, accepted in edge_values(name):
        if accepted:
            check_config_values({name: value})
        else:
            with pytest.raises(InputError, match="out of range") as error:
                check_config_values({name: value})
            assert error.value.option == name


def test_settings_check_choices_and_labels():
    with pytest.raises(InputError, match="'tpu' is not one of auto, cpu, cuda") as error:
        ProtectionSettings(device="tpu")
    assert error.value.option == "device"
    with pytest.raises(InputError) as error:
        ProtectionSettings(labels=(0, 1))
    assert error.value.option == "labels"
    assert ProtectionSettings(epsilon=64, band_radius=0, min_psnr=20).recorded()["epsilon"] == 64


def test_settings_check_the_victim_spacing():
    for spacing in [(), (3.0, 0.0, 0.8)]:
        with pytest.raises(InputError, match="give positive spacings") as error:
            ProtectionSettings(victim_spacing=spacing)
        assert error.value.option == "victim_spacing"
    assert ProtectionSettings(victim_spacing=(3.0, 0.8, 0.8)).recorded()["victim_spacing"] == [3.0, 0.8, 0.8]


@pytest.mark.parametrize(
    "error, message",
    [
        (InputError("out.nii.gz: exists", option="overwrite"), "out.nii.gz: exists (use --overwrite)"),
        (InputError("c1: mask is empty", option="allow_empty"), "c1: mask is empty (use --allow-empty)"),
        (InputError("99 is out of range [0, 32]", option="band_radius"), "--band-radius 99 is out of range [0, 32]"),
        (InputError("must be at least 1", option="patch_size"), "--patch-size must be at least 1"),
        (InputError("x.nii.gz: file not found"), "x.nii.gz: file not found"),
    ],
)
def test_the_cli_words_an_option_as_the_remedy_or_the_value_at_fault(error, message):
    assert option_message(error) == message


def test_warnings_naming_an_option_are_worded_like_errors(capsys):
    cli._configure_logging()
    logging.getLogger("umedprotect").warning("case c1 will be skipped", extra={"option": "allow_empty"})
    assert capsys.readouterr().err == "umedprotect: warning: case c1 will be skipped (use --allow-empty)\n"


def library_modules() -> list[Path]:
    """The product's modules outside the command line (the settings table holds the flags by design)."""
    return [
        p
        for p in sorted(LIBRARY.rglob("*.py"))
        if "cli" not in p.relative_to(LIBRARY).parts and p.name != "settings.py"
    ]


def string_parts(tree: ast.AST) -> list[str]:
    """Every string literal and f-string part of a module, docstrings excluded."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_library_messages_name_options_not_command_line_flags():
    modules = library_modules()
    assert len(modules) > 15 and any(p.name == "dataset_protection.py" for p in modules)
    flagged = [
        f"{path.name}: {text!r}"
        for path in modules
        for text in string_parts(ast.parse(path.read_text(encoding="utf-8")))
        if re.search(r"(^|[\s(])--[a-z]", text)
    ]
    assert not flagged, flagged


def test_the_flag_scan_finds_a_flag_in_a_message():
    tree = ast.parse(
        'def f(path):\n    """Use --overwrite."""\n    raise InputError(f"{path}: exists (use --overwrite)")\n'
    )
    assert string_parts(tree) == [": exists (use --overwrite)"]
