"""Signing in with a token: the page offers what the role may do; the broker decides anyway."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.helpers import Broker
from tests.security.support import TokensFile
from tests.web.conftest import Dashboard
from worker_sdk import Client, Workflow


@pytest.fixture
def tokens_file(tmp_path: Path) -> TokensFile:
    tokens = TokensFile(tmp_path / "tokens.toml")
    tokens.add("alice", "submitter")
    tokens.add("bob", "submitter")
    tokens.add("oscar", "operator")
    return tokens


@pytest.fixture
def broker_args(tokens_file: TokensFile) -> list[str]:
    return ["--http-listen", "127.0.0.1:0", "--tokens", str(tokens_file.path)]


# The first request of a page without a token is refused (that is how it learns to ask for
# one); Chromium logs the refused request's status as a console error.
UNSIGNED = r"status of 401 \(Unauthorized\)"


async def sign_in(dashboard: Dashboard, token: str) -> None:
    dashboard.problems.allow(UNSIGNED)
    page = dashboard.page
    await page.goto(dashboard.base)
    await page.get_by_label("Access token").fill(token)
    await page.get_by_test_id("sign-in").click()
    await dashboard.live()


async def test_a_submitter_sees_only_its_tasks_and_no_operator_buttons(
    broker: Broker, dashboard: Dashboard, tokens_file: TokensFile
) -> None:
    async with Client(broker.target, token=tokens_file.tokens["alice"]) as alice:
        mine = await alice.submit("echo", queue="shared")
    async with Client(broker.target, token=tokens_file.tokens["bob"]) as bob:
        theirs = await bob.submit("echo", queue="shared")
    await sign_in(dashboard, tokens_file.tokens["alice"])
    page = dashboard.page
    await expect(page.get_by_test_id("caller")).to_have_text("alice (submitter)")
    # Only Tasks and Workflows are offered: no overview, dead letters, schedules or workers.
    await expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        ["Tasks", "Workflows"]
    )
    await expect(page.get_by_test_id(f"task-{mine.id}")).to_be_visible()
    await expect(page.get_by_test_id("own-only")).to_be_visible()
    assert await page.get_by_test_id(f"task-{theirs.id}").count() == 0
    # A task submitted now, by alice, appears live; bob's never does.
    async with Client(broker.target, token=tokens_file.tokens["bob"]) as bob:
        await bob.submit("echo", queue="shared")
    async with Client(broker.target, token=tokens_file.tokens["alice"]) as alice:
        later = await alice.submit("echo", queue="shared")
    await expect(page.get_by_test_id(f"task-{later.id}")).to_be_visible()
    await expect(page.get_by_role("table").locator("tbody tr")).to_have_count(2)
    # Her task's page: cancel (hers to cancel), no retry, no operator actions anywhere.
    await page.get_by_role("link", name=mine.id).click()
    await expect(page.get_by_test_id("task-id")).to_have_text(mine.id)
    await expect(page.get_by_test_id("cancel")).to_be_visible()
    assert await page.get_by_test_id("retry").count() == 0
    # The pages an operator has are not there, even when typed in.
    await page.goto(f"{dashboard.base}#/dead")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    # And the broker refuses what the page does not offer, whoever sends it.
    dashboard.problems.allow(r"status of 403 \(Forbidden\)")
    refusal = await page.evaluate(
        """async (id) => {
            const r = await fetch("/taskyard.v1.TaskService/RetryTask", {
              method: "POST",
              headers: {"Content-Type": "application/json",
                        "Authorization": `Bearer ${sessionStorage.getItem("taskyard.token")}`},
              body: JSON.stringify({id})});
            return [r.status, (await r.json()).code];
        }""",
        mine.id,
    )
    assert refusal == [403, "permission_denied"]
    other = await page.evaluate(
        """async (id) => {
            const r = await fetch("/taskyard.v1.TaskService/GetTask", {
              method: "POST",
              headers: {"Content-Type": "application/json",
                        "Authorization": `Bearer ${sessionStorage.getItem("taskyard.token")}`},
              body: JSON.stringify({id})});
            return r.status;
        }""",
        theirs.id,
    )
    assert other == 403


async def test_an_operator_signs_in_and_out(
    broker: Broker, dashboard: Dashboard, tokens_file: TokensFile
) -> None:
    page = dashboard.page
    dashboard.problems.allow(UNSIGNED)
    await page.goto(dashboard.base)
    await page.get_by_label("Access token").fill("tyk_000000000000_not-a-real-secret")
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_role("alert")).to_contain_text("INVALID_TOKEN")
    await page.get_by_label("Access token").fill(tokens_file.tokens["oscar"])
    await page.get_by_test_id("sign-in").click()
    await dashboard.live()
    await expect(page.get_by_test_id("caller")).to_have_text("oscar (operator)")
    await expect(page.get_by_role("navigation", name="Main").get_by_role("link")).to_have_text(
        ["Overview", "Tasks", "Dead letters", "Schedules", "Workers", "Workflows"]
    )
    await page.get_by_test_id("sign-out").click()
    await expect(page.get_by_label("Access token")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('taskyard.token')") is None


async def test_a_submitter_sees_only_its_workflows_and_may_cancel_not_retry(
    broker: Broker, dashboard: Dashboard, tokens_file: TokensFile
) -> None:
    async with Client(broker.target, token=tokens_file.tokens["alice"]) as alice:
        mine = await alice.create_workflow(_pair("alice-flow"))
    async with Client(broker.target, token=tokens_file.tokens["bob"]) as bob:
        theirs = await bob.create_workflow(_pair("bob-flow"))
    await sign_in(dashboard, tokens_file.tokens["alice"])
    page = dashboard.page
    await page.get_by_test_id("nav-workflows").click()
    await expect(page.get_by_test_id(f"workflow-{mine.id}")).to_contain_text("alice-flow")
    await expect(page.get_by_role("table").locator("tbody tr")).to_have_count(1)
    assert await page.get_by_test_id(f"workflow-{theirs.id}").count() == 0
    await page.get_by_role("link", name=mine.id).click()
    await expect(page.get_by_test_id("node-second")).to_have_attribute("data-state", "BLOCKED")
    await expect(page.get_by_test_id("cancel-workflow")).to_be_visible()  # hers, no worker runs it
    await page.get_by_test_id("cancel-workflow").click()
    await page.get_by_test_id("cancel-workflow-confirm").click()
    await expect(page.get_by_test_id("workflow-state")).to_have_text("CANCELLED")
    # Retrying is an operator's: not offered to her, even now that it could run again.
    await expect(page.get_by_test_id("node-first")).to_have_attribute("data-state", "CANCELLED")
    assert await page.get_by_test_id("retry-workflow").count() == 0


def _pair(name: str) -> Workflow:
    wf = Workflow(name)
    wf.node("second", "echo", after=[wf.node("first", "echo")])
    return wf
