from conftest import ROOT, readme_commands


def test_ci_runs_the_readme_commands():
    install, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci, "the CI script must run the README's two commands verbatim"
    assert "venv" in (ROOT / ".ci" / "run").read_text()
