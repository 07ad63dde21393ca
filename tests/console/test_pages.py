"""The web console in headless Chromium against a real `perdure dev` fed from Kafka (conftest.py):
each page shows what the admin API says, and a cancel from the page reaches the caller."""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx
from playwright.sync_api import expect

from .conftest import NEW_ACCOUNTS, Seeded, screenshot, wait_for


def open_console(page: Any, seeded: Seeded, fragment: str = "") -> None:
    page.goto(f"{seeded.admin}/ui/{fragment}")


def test_overview_counts_statuses_and_shows_the_subscription(page: Any, seeded: Seeded) -> None:
    open_console(page, seeded)
    suspended = page.locator('.tile[data-status="suspended"] .count')
    expect(suspended).to_have_text(str(NEW_ACCOUNTS))
    expect(page.locator(f'tr[data-subscription="{seeded.subscription}"]')).to_contain_text("running")
    expect(page.locator(".chart rect.ok").first).to_be_attached()
    expect(page.get_by_role("link", name="userUpdates")).to_be_visible()
    print(screenshot(page, "overview"))


def test_the_list_shows_the_invocations_and_filters_them(page: Any, seeded: Seeded) -> None:
    open_console(page, seeded, "#/invocations")
    rows = page.locator("table.invocations tbody tr[data-id]")
    expect(rows).to_have_count(25)  # a full first page, newest first
    newest = seeded.get("/invocations", order="desc", limit=1)["invocations"][0]
    expect(rows.first).to_have_attribute("data-id", newest["id"])
    expect(rows.first).to_contain_text(newest["target"])
    print(screenshot(page, "invocations"))

    page.select_option("#filter-status", "suspended")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"#/invocations\?status=suspended$"))
    expect(rows).to_have_count(NEW_ACCOUNTS)
    for row in rows.all():
        expect(row).to_have_attribute("data-status", "suspended")
        expect(row).to_contain_text("userUpdates/")
    print(screenshot(page, "invocations-suspended"))


def test_a_sleeping_key_is_suspended_with_its_wake_up_time_and_timeline(page: Any, seeded: Seeded) -> None:
    [sleeping] = seeded.get("/invocations", status="suspended", key=seeded.new_accounts[0])["invocations"]
    journal = seeded.get(f"/invocations/{sleeping['id']}")["journal"]
    [sleep] = [e for e in journal if e["type"] == "SleepCommand"]

    open_console(page, seeded, "#/invocations?status=suspended")
    page.locator(f'tr[data-id="{sleeping["id"]}"] a').click()
    expect(page.locator("#invocation-id")).to_have_text(sleeping["id"])
    expect(page.locator("dl.facts")).to_contain_text("suspended")
    timeline = page.locator("ol.timeline")
    expect(timeline).to_have_attribute("data-entries", str(len(journal)))
    expect(timeline.locator('li[data-type="InputCommand"]')).to_contain_text("from Kafka user-updates/")
    run = timeline.locator('li[data-type="RunCommand"]').first
    expect(run).to_contain_text('ctx.run "update profile"')
    expect(run).to_contain_text('"NOT_READY"')  # the step's recorded result, from its notification
    sleep_row = timeline.locator('li[data-type="SleepCommand"]')
    expect(sleep_row).to_contain_text("until")
    expect(sleep_row.locator("time")).to_have_attribute("datetime", sleep["wake_up_time"])
    expect(sleep_row.locator(".wake")).to_contain_text(re.compile(r"wakes in \d+ (s|min)"))
    expect(page.locator('button[data-action="cancel"]')).to_be_enabled()
    expect(page.locator('button[data-action="purge"]')).to_be_disabled()
    print(screenshot(page, "invocation-suspended"))


def test_the_state_page_shows_a_blocked_keys_holder_and_queue(page: Any, seeded: Seeded) -> None:
    key = seeded.new_accounts[0]
    described = seeded.get(f"/services/userUpdates/keys/{key}")
    assert described["queued"] > 0  # the key's later updates wait behind its sleeping first one

    open_console(page, seeded, f"#/state?service=userUpdates&key={key}")
    detail = page.locator(f'.key-detail[data-key="{key}"]')
    expect(detail.locator(".holder")).to_contain_text("suspended")
    queue = detail.locator("table.inbox tbody tr[data-id]")
    expect(queue).to_have_count(min(described["queued"], 200))
    shown = [row.get_attribute("data-id") for row in queue.all()]
    assert shown == [inv["id"] for inv in described["inbox"]]  # in the order they will run
    expect(page.locator(f'table.keys tr[data-key="{key}"]')).to_have_class(re.compile("blocked"))

    done = next(u for u in seeded.users if u not in seeded.new_accounts)
    page.fill("#state-key", done)
    page.get_by_role("button", name="Show").click()
    role = seeded.get(f"/state/userUpdates/{done}")["state"]["role"]
    expect(page.locator(f'.key-detail[data-key="{done}"] dl.state')).to_contain_text(f'"{role}"')
    open_console(page, seeded, f"#/state?service=userUpdates&key={key}")
    expect(page.locator(f'.key-detail[data-key="{key}"] .holder')).to_be_visible()
    print(screenshot(page, "state"))


def test_the_kafka_page_shows_lag_going_to_zero_and_the_poison_record(page: Any, seeded: Seeded) -> None:
    open_console(page, seeded, "#/kafka")
    card = page.locator(f'section.subscription[data-subscription="{seeded.subscription}"]')
    expect(card.locator("dd.lag")).to_have_attribute("data-lag", "0", timeout=30_000)
    expect(card.locator("dd.records")).to_have_text(f"{seeded.produced:,}")
    partitions = card.locator("table.partitions tbody tr[data-partition]")
    expect(partitions).to_have_count(4)
    for row in partitions.all():
        expect(row).to_have_attribute("data-lag", "0")
    partition, offset = seeded.poison
    poison = card.locator(f'table.failures tr[data-offset="{offset}"]')
    expect(poison).to_contain_text("the permission service does not know auditor")  # its failure
    expect(poison.locator("td").nth(1)).to_have_text(str(partition))
    poison.get_by_role("link").click()
    expect(page.locator("dl.facts")).to_contain_text("failed")
    expect(page.locator("dl.facts")).to_contain_text("the permission service does not know auditor")
    open_console(page, seeded, "#/kafka")
    expect(page.locator("section.subscription dd.rate")).not_to_have_text("…")
    print(screenshot(page, "kafka"))


def test_the_deployments_page_lists_the_in_process_services(page: Any, seeded: Seeded) -> None:
    open_console(page, seeded, "#/deployments")
    expect(page.locator("section.panel").first).to_contain_text("in-process")
    expect(page.locator("section.panel").first).to_contain_text("updateUserEvent")
    expect(page.get_by_text("No remote deployments")).to_be_visible()
    print(screenshot(page, "deployments"))


def test_cancelling_from_the_page_ends_the_call_with_409(page: Any, seeded: Seeded) -> None:
    answer: list[httpx.Response] = []
    update = {"profile": {"name": "newbie", "account": "new"}, "permissions": ["read"]}

    def call() -> None:  # the caller: waits for the handler's answer
        url = f"{seeded.ingress}/userUpdates/newbie/updateUserEvent"
        answer.append(httpx.post(url, json=update, timeout=60))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    [sleeping] = wait_for(
        lambda: seeded.get("/invocations", key="newbie", status="suspended")["invocations"],
        "the call's invocation to sleep",
    )

    open_console(page, seeded, f"#/invocations/{sleeping['id']}")
    expect(page.locator("dl.facts")).to_contain_text("suspended")
    page.locator('button[data-action="cancel"]').click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_contain_text(f"cancel {sleeping['id']}?")
    print(screenshot(page, "invocation-cancel-confirm"))
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.locator(".message")).to_contain_text("Cancel requested")
    caller.join(30)
    assert answer and answer[0].status_code == 409, answer and answer[0].text
    assert answer[0].json()["message"] == "cancelled"
    expect(page.locator("dl.facts")).to_contain_text("completed")
    expect(page.locator("dl.facts")).to_contain_text("409 cancelled")
    expect(page.locator('button[data-action="cancel"]')).to_be_disabled()
    print(screenshot(page, "invocation-cancelled"))
