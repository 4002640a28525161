"""The documents: links resolve, README stays a front door, generated pages are up to date."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

from umedprotect.cli import build_parser

MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Pages other branches write; a link to one may dangle until it lands. Remove each name once its page exists.
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
ISSUE_REFERENCE = re.compile(r"\bissues? #?\d", re.IGNORECASE)
TEXT_SUFFIXES = {".md", ".py", ".sh", ".toml", ".json", ".jsonl", ".txt", ".ui", ".s4ext", ".cfg", ".yml", ".yaml"}
SKIPPED_DIRS = {".git", ".venv", "out", "build", "dist", "data", "__pycache__"}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {_slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def _relative_links(path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _relative_links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to nothing: {broken}"


def test_link_check_finds_broken_links(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](page.md#title) [gone](missing.md) [bad anchor](#nope) ![img](x.png)\n")
    assert _relative_links(page) == ["page.md#title", "missing.md", "#nope", "x.png"]
    assert _anchors(page) == {"title"}


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150
    text = "\n".join(lines)
    for command in ("bash scripts/demo.sh", "bash .ci/run"):
        assert command in text
    assert "NOTICE" in text


def _repository_text_files():
    for directory, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS and not d.startswith(".") or d == ".ci"]
        for name in files:
            path = os.path.join(directory, name)
            if os.path.splitext(name)[1] in TEXT_SUFFIXES or directory.endswith(".ci"):
                yield path


def test_no_references_to_issue_numbers():
    found = []
    for path in _repository_text_files():
        with open(path, encoding="utf-8", errors="replace") as handle:
            found += [
                f"{os.path.relpath(path, ROOT)}:{n}" for n, line in enumerate(handle, 1) if ISSUE_REFERENCE.search(line)
            ]
    assert not found, f"'issue N' means nothing in the repository: {found}"


def _run_check(module: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, "--check"], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.slow
def test_results_page_and_tables_are_up_to_date():
    result = _run_check("benchmarks.make_results")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_cli_reference_is_up_to_date():
    result = _run_check("benchmarks.make_cli_reference")
    assert result.returncode == 0, result.stderr


def test_cli_reference_lists_every_option():
    text = (ROOT / "docs" / "reference" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    missing = [
        f"{name} {flag}"
        for name, sub in commands.items()
        for action in sub._actions
        for flag in action.option_strings
        if flag not in ("-h", "--help")
        and f"`{flag}`" not in text.split(f"## `umedprotect {name}`")[1].split("\n## ")[0]
    ]
    assert not missing, f"docs/reference/cli.md lacks: {missing}"


def _experiments() -> list[dict]:
    return [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((ROOT / "benchmarks" / "experiments").glob("*.json"))
    ]


def _cited_files(experiment: dict) -> set[str]:
    return {
        name
        for row in experiment["rows"]
        for source in row["sources"]
        for name in [source["file"], *source.get("clean", []), *filter(None, [source.get("quality")])]
    }


def test_every_cited_result_file_has_the_command_that_writes_it():
    experiments = _experiments()
    commands = "\n".join(command for e in experiments for command in e["commands"])
    unwritten = sorted(name for e in experiments for name in _cited_files(e) if name not in commands)
    assert not unwritten, f"result files no experiment command writes: {unwritten}"


def test_git_keeps_only_the_cited_result_files():
    """benchmarks/results/ in git: the files the tables cite and one table per experiment (local runs may add more)."""
    listed = subprocess.run(
        ["git", "ls-files", "benchmarks/results"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    tracked = set(listed.stdout.split())
    tables = {f"benchmarks/results/tables/{e['name']}.json" for e in _experiments()}
    cited = {name for e in _experiments() for name in _cited_files(e)}
    assert tracked == cited | tables, (
        f"uncited: {sorted(tracked - cited - tables)}; untracked: {sorted(cited - tracked)}"
    )


def test_every_table_row_names_the_commit_of_its_result_files():
    """A table written before its result files were committed says "uncommitted": rewrite it after committing them."""
    stale = {
        e["name"]
        for e in _experiments()
        for row in json.loads((ROOT / "benchmarks" / "results" / "tables" / f"{e['name']}.json").read_text())
        if row["commit"] == "uncommitted"
    }
    assert not stale, f"rerun python -m benchmarks.run_experiments NAME --table-only for {stale}"


def test_experiment_commands_use_current_options():
    """Every umedprotect command of an experiment parses with today's parser (no options that no longer exist)."""
    parser = build_parser()
    commands = [c for e in _experiments() for c in e["commands"] if c.startswith("umedprotect ")]
    assert commands
    for command in commands:
        argv = shlex.split(command.split(">")[0])[1:]
        parser.parse_args(argv)  # exits 2 on an unknown option or a bad value
