import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_ci_and_workflow_run_the_readme_test_command():
    main_job, tests = _commands()[:2]
    assert "nbhelpers run --profile tiny" in main_job and "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
    assert f"run: {tests}" in (ROOT / ".github" / "workflows" / "ci.yml").read_text()


def test_every_notebook_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        assert f"(notebooks/{notebook.name})" in readme
        assert f"blob/main/notebooks/{notebook.name})" in readme
