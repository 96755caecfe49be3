"""The book publishes itself: the workflows run the project's own commands, and the README says where.

actionlint validates the workflow files (tests/test_workflows.py); these tests check what they do.
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))   # YAML 1.1 reads the key `on` as True
    return workflow


def runs(workflow: dict) -> list[str]:
    return [step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]


def uses(workflow: dict) -> list[str]:
    return [step.get("uses", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]


def pages_url() -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    owner, repo = config["repository"]["url"].rstrip("/").removeprefix("https://github.com/").split("/")
    return f"https://{owner}.github.io/{repo}/"


def test_book_workflow_builds_with_make_book_on_main_and_deploys_pages():
    workflow = load("book.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert "make book" in runs(workflow) and "make assignments" in runs(workflow)
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses(workflow))
    assert any(u.startswith("actions/deploy-pages@") for u in uses(workflow))
    # Only the student notebooks are published, never the autograders or solutions.
    published = "\n".join(runs(workflow))
    assert "autograder" not in published and "solutions" not in published


def test_tests_workflow_runs_make_test_on_pull_requests():
    workflow = load("tests.yml")
    assert "pull_request" in workflow["on"]
    assert "./.ci/run" in runs(workflow)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_says_where_the_book_is_published():
    assert pages_url() in (ROOT / "README.md").read_text()
