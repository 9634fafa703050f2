"""What the docs show is what the program does: every example in docs/*.md and README.md runs, every output they
show is what the command or code prints, every file they show is the file; docs/mixers.md is the generator's output.

Which fenced blocks run, in document order, each document in its own empty temporary folder (with ``specs/``
and ``search/`` linked in, so the docs' repository-relative paths work):

* ```python: executed, all blocks of a document in one namespace (a later block may use an earlier name);
* ```bash / ```sh / ```console whose first command starts with ``composer `` (``$ composer`` in console
  blocks): every command runs in-process through ``composer.cli.main`` (``#`` comments and glob patterns are
  handled as a shell would) and must exit 0. In a console block the lines after a ``$`` line, up to the next
  ``$`` line, are that command's output as shown: they must match what it printed (stdout and stderr);
* ```yaml: must parse; a spec (``layout``/``ensemble``/``extends`` at top level) must validate and a search
  space (``choices``) must load, unless the block is written to a file (see below) for later blocks to use;
* ```text: a shown output (``<!-- output -->``), or marked ``no-test`` with the reason; nothing else.

A block whose first line is ``# PATH`` (``# specs/caformer_s18.yaml``, ``# search/NAME.yaml``: a path in the
repository) claims to be that file: the rest of the block must equal the file, or the block is marked
``<!-- excerpt -->`` and its lines appear in the file in the same order (comments after a value and lines
``...`` left out of the comparison).

Shown output is compared line by line, trailing spaces ignored: a line ``...`` matches any number of lines,
``...`` inside a line matches any text, and a number written ``~83.6`` matches any number (timings, a proxy's
score: figures that differ from machine to machine; everything else must be exact).

Markers, on the line right before the fence:

* ``<!-- no-test: REASON -->``: the block is not run (the reason is required);
* ``<!-- file: NAME -->``: a yaml block is also written to NAME in the document's folder;
* ``<!-- exit: N -->``: the block's commands must exit with N instead of 0;
* ``<!-- output -->`` before a ```text block: it must equal what the previous block printed;
* ``<!-- excerpt -->`` before a block that claims to be a file: it is part of that file (and is not run).

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
MARKER = re.compile(r"^<!--\s*(no-test|file|exit|output|excerpt)\s*(?::\s*(.*?))?\s*-->\s*$")
CLAIMED_FILE = re.compile(r"^#\s+([\w.-]+(?:/[\w.-]+)+)\s*$")  # "# specs/caformer_s18.yaml" heading a block
SHOWN_NUMBER = re.compile(r"~[-+]?(?:\d[\d,]*)?\.?\d+(?:e[-+]?\d+)?")  # ~83.6: any number (varies by machine)
ANY_NUMBER = r"[-+]?(?:\d[\d,]*)?\.?\d+(?:e[-+]?\d+)?"
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
        return [command for command, _ in self.steps()]

    def steps(self) -> list[tuple[str, str | None]]:
        """Each command with the output shown under it (console blocks; None where none is shown)."""
        lines = [line.strip() for line in self.text.splitlines()]
        if self.lang != "console":
            return [(line, None) for line in lines if line and not line.startswith("#")]
        steps: list[tuple[str, list[str]]] = []
        for raw, line in zip(self.text.splitlines(), lines):
            if line.startswith("$"):
                steps.append((line[1:].strip(), []))
            elif steps:
                steps[-1][1].append(raw)
        return [(command, "\n".join(shown).strip("\n") + "\n" if any(x.strip() for x in shown) else None)
                for command, shown in steps]

    def claimed_file(self) -> str | None:
        """The repository path the block's first line names (``# specs/caformer_s18.yaml``), if any."""
        match = CLAIMED_FILE.match(self.text.splitlines()[0].strip()) if self.text.strip() else None
        return match.group(1) if match else None

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


def _expected_line(line: str) -> str:
    """One shown line as a pattern: ``...`` is any text, ``~NUMBER`` any number (and the spaces beside it any
    spaces: a number of another width moves a table's columns), the rest literal."""
    pieces = []
    for k, part in enumerate(line.rstrip().split("...")):
        if k:
            pieces.append(".*?")
        last = 0
        for number in SHOWN_NUMBER.finditer(part):
            before = part[last:number.start()]
            pieces += [re.escape(before.rstrip(" ")), r" *" + ANY_NUMBER + r" *"]
            last = number.end()
            last += len(part[last:]) - len(part[last:].lstrip(" "))
        pieces.append(re.escape(part[last:]))
    return "".join(pieces) + r"[ \t]*\n"


def _expected_output(text: str) -> re.Pattern:
    parts = [r"(?:.*\n)*?" if line.strip() == "..." else _expected_line(line) for line in text.splitlines()]
    return re.compile("".join(parts) + r"\Z")


def _matches(shown: str, printed: str) -> bool:
    normalised = "\n".join(line.rstrip() for line in printed.splitlines()) + "\n" if printed else ""
    return bool(_expected_output(shown).match(normalised))


def _without_comment(line: str) -> str:
    """A YAML / Python line without a trailing comment and spacing, for comparing an annotated excerpt."""
    return re.sub(r"\s+#.*$", "", line).strip() if not line.lstrip().startswith("#") else line.strip()


def check_claimed_file(block: Block) -> None:
    """A block headed ``# PATH`` is that file (or, marked excerpt, part of it in order)."""
    claimed = block.claimed_file()
    if claimed is None or block.marker == "file":  # a file the document writes is that file by construction
        return
    path = ROOT / claimed
    assert path.is_file(), f"{block.where}: the block is headed {claimed!r}, but the repository has no such file"
    shown = block.text.split("\n", 1)[1]
    real = path.read_text()
    if block.marker != "excerpt":
        if shown.rstrip("\n") != real.rstrip("\n"):
            pytest.fail(f"{block.where}: the block is headed {claimed!r} but differs from that file; show the file "
                        f"as it is, or mark the block <!-- excerpt --> (its lines in the file's order):\n{real}")
        return
    remaining = iter(_without_comment(line) for line in real.splitlines())
    for line in shown.splitlines():
        wanted = _without_comment(line)
        if not wanted or wanted == "...":
            continue
        if not any(have == wanted for have in remaining):  # consumes the file up to the match: order counts
            pytest.fail(f"{block.where}: this excerpt of {claimed} shows a line the file does not have (or not in "
                        f"this order): {line.strip()!r}")


class DocRunner:
    """Runs one document's blocks in order; remembers what the last block printed."""

    def __init__(self):
        self.namespace: dict = {"__name__": "__docs__"}
        self.printed = ""

    def run(self, block: Block) -> None:
        check_claimed_file(block)
        if block.marker == "excerpt":  # part of a file, checked against it: it need not run or load on its own
            return
        if block.lang == "python":
            self._python(block)
        elif block.lang in SHELLS and block.runs_composer():
            self._commands(block)
        elif block.lang == "yaml":
            self._yaml(block)
        elif block.lang == "text":
            assert block.marker == "output", (
                f"{block.where}: a text block is a shown output: mark it <!-- output --> (it is then compared with "
                "what the previous block printed) or <!-- no-test: REASON -->")
            if not _matches(block.text, self.printed):
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
        for command, shown in block.steps():
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
            if shown is not None and not _matches(shown, out.getvalue()):
                pytest.fail(f"{block.where}: the output shown under `$ {command}` differs from what it printed:\n"
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
        check_runnable(block)
        runner.run(block)


def check_runnable(block: Block) -> None:
    """A composer command or a shown output cannot hide from the runner: in an unlabelled fence, or under a
    console command the runner cannot run (only composer commands run)."""
    if not block.lang:
        assert not re.match(r"\s*(\$\s*)?composer ", block.text), (
            f"{block.where}: label this fence (```bash / ```console) so the commands run, or mark it no-test")
    if block.lang == "console" and not block.runs_composer():
        assert all(shown is None for _, shown in block.steps()), (
            f"{block.where}: this console block shows output of a command the docs test cannot run; show a "
            "composer command's output, or mark the block <!-- no-test: REASON -->")


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


def test_output_blocks_mark_machine_dependent_numbers_and_elide_within_a_line():
    pattern = _expected_output("checked (~83.6 ms each), 6 over budget\nerror: x.yaml:3: ... allowed: a, ...\n")
    assert pattern.match("checked (12 ms each), 6 over budget\nerror: x.yaml:3: unknown 'b'; allowed: a, c, d\n")
    assert pattern.match("checked (1,204.55 ms each), 6 over budget\nerror: x.yaml:3: z allowed: a, \n")
    assert not pattern.match("checked (fast each), 6 over budget\nerror: x.yaml:3: z allowed: a, c\n")
    assert not pattern.match("checked (12 ms each), 7 over budget\nerror: x.yaml:3: z allowed: a, c\n")  # exact
    aligned = _expected_output("trial  proxy  GMACs\n    1  ~9.25  1.017\n")  # a wider score moves the columns
    assert aligned.match("trial  proxy  GMACs\n    1  91.98  1.017\n")
    assert aligned.match("trial  proxy  GMACs\n    1   -0.5  1.017\n")
    assert not aligned.match("trial  proxy  GMACs\n    1  91.98  1.018\n")


VALIDATED = "ok  caformer_s18: caformer_s18 @224: 26,341,656 params, 4.11G MACs\n"


def test_a_console_block_compares_each_command_with_its_shown_output(doc_folder):
    right = Block(ROOT / "README.md", 1, "console", f"$ composer validate caformer_s18\n{VALIDATED}"
                  "$ composer validate caformer_s18   # no output shown: not compared\n")
    assert right.steps() == [("composer validate caformer_s18", VALIDATED),
                             ("composer validate caformer_s18   # no output shown: not compared", None)]
    DocRunner().run(right)
    DocRunner().run(Block(ROOT / "README.md", 1, "console", "$ composer validate caformer_s18\n"
                          "ok  caformer_s18: caformer_s18 @224: ~1 params, ~4.1G MACs\n"))
    for wrong in (VALIDATED.replace("26,341,656", "26,341,657"), VALIDATED.replace("params", "parameters"),
                  VALIDATED + "and a line it does not print\n"):
        with pytest.raises(pytest.fail.Exception, match="the output shown under `\\$ composer validate caformer_s18` "
                                                        "differs"):
            DocRunner().run(Block(ROOT / "README.md", 1, "console", f"$ composer validate caformer_s18\n{wrong}"))


def test_a_text_block_is_a_checked_output_or_says_why_not(doc_folder):
    runner = DocRunner()
    runner.run(Block(ROOT / "README.md", 1, "bash", "composer validate caformer_s18\n"))
    runner.run(Block(ROOT / "README.md", 5, "text", VALIDATED, "output"))
    with pytest.raises(pytest.fail.Exception, match="README.md:9: the output shown differs"):
        runner.run(Block(ROOT / "README.md", 9, "text", VALIDATED.replace("4.11G", "4.1G"), "output"))
    with pytest.raises(AssertionError, match="mark it <!-- output -->"):
        runner.run(Block(ROOT / "README.md", 13, "text", VALIDATED))


def test_a_shown_output_of_a_command_that_cannot_run_says_why_it_is_not_checked():
    check_runnable(Block(ROOT / "README.md", 1, "console", "$ bash benchmarks/gpu_run.sh   # no output shown\n"))
    with pytest.raises(AssertionError, match="README.md:1: this console block shows output of a command"):
        check_runnable(Block(ROOT / "README.md", 1, "console", "$ pip install composer-vision\nInstalled\n"))
    with pytest.raises(AssertionError, match="label this fence"):
        check_runnable(Block(ROOT / "README.md", 1, "", "$ composer list\n"))


def test_a_block_headed_with_a_path_is_that_file(doc_folder):
    real = (ROOT / "specs" / "caformer_s18.yaml").read_text()
    DocRunner().run(Block(ROOT / "README.md", 1, "yaml", "# specs/caformer_s18.yaml\n" + real))
    as_the_readme_showed_it = ("# specs/caformer_s18.yaml\nname: caformer_s18\nmacro: metaformer\ninput_size: 224\n"
                               "widths: [64, 128, 320, 512]\ndepths: [3, 3, 9, 3]\nlayout: Conv-Conv-A-A\n"
                               "mixers:\n  Conv: {kernel_size: [7, 7, 5, 5]}\ndrop_path_rate: 0.15\n")
    with pytest.raises(pytest.fail.Exception, match="headed 'specs/caformer_s18.yaml' but differs from that file"):
        DocRunner().run(Block(ROOT / "README.md", 1, "yaml", as_the_readme_showed_it))
    # an excerpt: the file's lines in its order (annotations after a value allowed), the rest left out
    excerpt = "# specs/caformer_s18.yaml\nname: caformer_s18\n...\nlayout: Conv-Conv-A-A   # one symbol per stage\n"
    DocRunner().run(Block(ROOT / "README.md", 1, "yaml", excerpt, "excerpt"))
    with pytest.raises(pytest.fail.Exception, match="a line the file does not have .*'mixers:'"):
        DocRunner().run(Block(ROOT / "README.md", 1, "yaml", as_the_readme_showed_it, "excerpt"))
    with pytest.raises(pytest.fail.Exception, match="not in this order.*'name: caformer_s18'"):
        DocRunner().run(Block(ROOT / "README.md", 1, "yaml", "# specs/caformer_s18.yaml\nlayout: Conv-Conv-A-A\n"
                              "name: caformer_s18\n", "excerpt"))
    with pytest.raises(AssertionError, match="the repository has no such file"):
        DocRunner().run(Block(ROOT / "README.md", 1, "yaml", "# specs/caformer_s19.yaml\nname: x\n"))


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
