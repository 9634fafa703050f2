"""Every example in docs/*.md and README.md runs, and docs/mixers.md is the generator's output.

Which fenced blocks run, in document order, each document in its own empty temporary folder (with ``specs/``
and ``search/`` linked in, so the docs' repository-relative paths work):

* ```python: executed, all blocks of a document in one namespace (a later block may use an earlier name);
* ```bash / ```sh / ```console whose first command starts with ``composer `` (``$ composer`` in console
  blocks, where lines without ``$`` are output): every command runs in-process through
  ``composer.cli.main`` (``#`` comments and glob patterns are handled as a shell would) and must exit 0;
* ```yaml: must parse; a spec (``layout``/``ensemble``/``extends`` at top level) must validate and a search
  space (``choices``) must load, unless the block is written to a file (see below) for later blocks to use.

Markers, on the line right before the fence:

* ``<!-- no-test: REASON -->``: the block is not run (the reason is required);
* ``<!-- file: NAME -->``: a yaml block is also written to NAME in the document's folder;
* ``<!-- exit: N -->``: the block's commands must exit with N instead of 0;
* ``<!-- output -->`` before a ```text block: it must equal what the previous block printed (stdout and
  stderr; a line ``...`` matches any number of lines).

Unlabelled fences that start with a composer command are rejected, so a runnable example cannot hide.
"""

from __future__ import annotations

import contextlib
import glob
import io
import re
import shlex
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```([\w-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(no-test|file|exit|output)\s*(?::\s*(.*?))?\s*-->\s*$")
SHELLS = {"bash", "sh", "shell", "console"}


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    marker: str | None = None
    argument: str = ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[str]:
        """The shell commands of a bash/console block (console: only the ``$`` lines)."""
        lines = [line.strip() for line in self.text.splitlines()]
        if self.lang == "console":
            return [line[1:].strip() for line in lines if line.startswith("$")]
        return [line for line in lines if line and not line.startswith("#")]

    def runs_composer(self) -> bool:
        commands = self.commands()
        return bool(commands) and commands[0].startswith("composer ")


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{path.relative_to(ROOT)}:{i + 1}: unclosed code fence"
        marker = MARKER.match(lines[i - 1].strip()) if i else None
        found.append(Block(path, i + 1, opening.group(1).lower(), "\n".join(lines[i + 1:end]) + "\n",
                           marker.group(1) if marker else None, (marker.group(2) or "") if marker else ""))
        i = end + 1
    return found


def _expected_output(text: str) -> re.Pattern:
    parts = [r"(?:.*\n)*?" if line.strip() == "..." else re.escape(line.rstrip()) + r"[ \t]*\n"
             for line in text.splitlines()]
    return re.compile("".join(parts) + r"\Z")


class DocRunner:
    """Runs one document's blocks in order; remembers what the last block printed."""

    def __init__(self):
        self.namespace: dict = {"__name__": "__docs__"}
        self.printed = ""

    def run(self, block: Block) -> None:
        if block.lang == "python":
            self._python(block)
        elif block.lang in SHELLS and block.runs_composer():
            self._commands(block)
        elif block.lang == "yaml":
            self._yaml(block)
        elif block.lang == "text" and block.marker == "output":
            normalised = "\n".join(line.rstrip() for line in self.printed.splitlines()) + "\n"
            if not _expected_output(block.text).match(normalised):
                pytest.fail(f"{block.where}: the output shown differs from what the previous block printed:\n"
                            f"{self.printed}")

    def _python(self, block: Block) -> None:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                exec(compile(block.text, block.where, "exec", dont_inherit=True), self.namespace)  # as users run it
            except Exception:
                pytest.fail(f"{block.where}: the python block failed:\n{out.getvalue()}{traceback.format_exc()}")
        self.printed = out.getvalue()

    def _commands(self, block: Block) -> None:
        from composer.cli import main

        expected = int(block.argument) if block.marker == "exit" else 0
        self.printed = ""
        for command in block.commands():
            assert command.startswith("composer "), f"{block.where}: only composer commands can run: {command!r}"
            args = []
            for word in shlex.split(command, comments=True)[1:]:
                is_pattern = any(c in word for c in "*?[")
                args += (sorted(glob.glob(word)) or [word]) if is_pattern else [word]  # as bash without nullglob
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    code = main(args)
                except SystemExit as exc:  # argparse
                    code = exc.code
            self.printed += out.getvalue()
            assert code == expected, (f"{block.where}: `{command}` exited with {code}, expected {expected}:\n"
                                      f"{out.getvalue()}")

    def _yaml(self, block: Block) -> None:
        data = yaml.safe_load(block.text)
        if block.marker == "file":  # checked by the commands that use it (it may be a deliberately broken spec)
            Path(block.argument).write_text(block.text)
            return
        try:
            if isinstance(data, dict) and "choices" in data:
                from composer.search import load_space

                load_space(data)
            elif isinstance(data, dict) and {"layout", "ensemble", "extends"} & set(data):
                from composer import estimate

                estimate(block.text)
        except Exception as exc:
            pytest.fail(f"{block.where}: this YAML example does not load: {exc}")


@pytest.fixture
def doc_folder(tmp_path, monkeypatch):
    """An empty folder with the repository's specs/ and search/ linked in, as the current directory; mixers
    registered by a document are unregistered afterwards."""
    from composer.registry import isolated

    for name in ("specs", "search"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    with isolated():
        yield tmp_path


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_in_the_docs_runs(path, doc_folder):
    runner = DocRunner()
    for block in blocks(path):
        if block.marker == "no-test":
            assert block.argument, f"{block.where}: say why the block is not tested: <!-- no-test: REASON -->"
            continue
        if not block.lang:
            assert not re.match(r"\s*(\$\s*)?composer ", block.text), (
                f"{block.where}: label this fence (```bash / ```console) so the commands run, or mark it no-test")
        runner.run(block)


def test_markers_are_read_as_documented(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- no-test: slow -->\n```python\nraise SystemExit\n```\n\n<!-- exit: 2 -->\n```console\n"
                   "$ composer validate broken.yaml   # a comment\nerror: ...\n$ composer list\n```\n"
                   "```bash\npip install x && composer list\n```\n")
    found = blocks(doc)
    assert [(b.line, b.lang, b.marker, b.argument) for b in found] == [
        (2, "python", "no-test", "slow"), (7, "console", "exit", "2"), (12, "bash", None, "")]
    assert found[1].commands() == ["composer validate broken.yaml   # a comment", "composer list"]
    assert found[1].runs_composer() and not found[2].runs_composer()


def test_output_blocks_match_line_by_line_with_ellipsis():
    pattern = _expected_output("first\n...\nlast\n")
    assert pattern.match("first\na\nb\nlast\n") and pattern.match("first\nlast\n")
    assert not pattern.match("first\nlast\nmore\n") and not pattern.match("frist\nlast\n")


def test_a_failing_command_fails_the_doc(doc_folder):
    block = Block(ROOT / "README.md", 1, "bash", "composer validate no_such_spec.yaml\n")
    with pytest.raises(AssertionError, match="exited with 2, expected 0"):
        DocRunner().run(block)


# ---------------------------------------------------------------------------------------------------------
# the generated catalogue


def test_the_mixer_catalogue_is_up_to_date():
    from composer.catalogue import REGENERATE, render

    committed = (ROOT / "docs" / "mixers.md").read_text()
    assert committed == render(), f"docs/mixers.md is stale: regenerate it with `{REGENERATE}`"


def test_every_mixer_has_a_summary_a_paper_and_a_cost_formula():
    from composer.catalogue import missing_docs

    assert missing_docs() == [], "set these class variables on the mixer configs: " + ", ".join(missing_docs())


def test_the_catalogue_lists_every_symbol_type_and_parameter():
    from composer.catalogue import render
    from composer.mixers import MIXERS, SYMBOLS

    page = render()
    for symbol, entries in SYMBOLS.items():
        for entry in entries.values():
            assert f"| `{symbol}` | {entry.macro or 'any'} | [`{entry.type}`](#{entry.type})" in page
    for type_name, cls in MIXERS.items():
        section = page.split(f"\n## `{type_name}`\n", 1)[1].split("\n## ", 1)[0]
        assert cls.cost_formula in section and cls.paper in section
        for name in cls.model_fields:
            assert name == "type" or f"| `{name}` |" in section, (type_name, name)
    # defaults as a spec writes them
    sep_conv = page.split("\n## `sep_conv`\n", 1)[1].split("\n## ", 1)[0]
    assert "| `kernel_size` | integer > 0 | `7` |" in sep_conv
    assert "| `act1` | 'star_relu' | 'gelu' | 'relu' | 'silu' | 'squared_relu' | 'identity' |" not in sep_conv
    assert "| `act1` | 'star_relu' \\| 'gelu' \\| 'relu' \\| 'silu' \\| 'squared_relu' \\| 'identity' | `star_relu` |" \
        in sep_conv
    assert "| `bias` | boolean | `false` |" in sep_conv


def test_the_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"(docs/{p.name})" not in readme]
    assert not missing, f"README.md does not link {', '.join(missing)}"


def test_the_spec_language_lists_every_macro():
    from composer.macro import MACROS

    text = (ROOT / "docs" / "spec-language.md").read_text()
    assert not [name for name in MACROS if f"| `{name}` |" not in text]
