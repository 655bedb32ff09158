"""The viewer app and the operator console in Debian's Chromium, against ``livemesh demo``:
a person signs up, searches, opens the demo title, watches 20 s of it without a stall
(the player's CMCD naming the playback session),
switches profile and finds it in the first profile's history; an operator creates a channel
in the console and sees it listed, finds the edges serving with the QoE the viewer's player
reported (CMCD, through the demo's QoE processor), and defines, starts and reads out an
experiment; a viewer's token is refused by the console. No page logs an error but the
refusals the test asks for. Screenshots go to docs/img/.

Every wait is on what the page shows (Playwright's locators and ``wait_for_function``);
the timeouts are only upper bounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from player.harness import chromium_page, missing_setup
from tests.services.test_gateway_console import LIVE_DELAY
from tests.stack_helpers import ROOT, demo_stack

pytestmark = pytest.mark.timeout(150)

IMG = ROOT / "docs" / "img"
WATCH_S = 20
EXPIRE_SESSION = """() => {
  const session = JSON.parse(localStorage.getItem('livemesh.session'));
  session.expireTime = '2000-01-01T00:00:00Z';
  localStorage.setItem('livemesh.session', JSON.stringify(session));
}"""


# the refusals the test asks for: a blank profile name, a viewer's token in the console
REFUSED_ON_PURPOSE = (
    "the server responded with a status of 400",
    "the server responded with a status of 403",
)


def _errors(log: Any) -> list[str]:
    """What the pages logged as errors, less the one refusal of each kind the test asks for."""
    errors = [line for line in log.console if line.startswith(("error:", "pageerror:"))]
    for refusal in REFUSED_ON_PURPOSE:
        refused = [line for line in errors if refusal in line]
        assert len(refused) == 1, errors
        errors.remove(refused[0])
    return errors


def _post(url: str, body: dict[str, Any], token: str = "") -> dict[str, Any]:
    """The gateway's answer to a POST of ``body`` (a refusal raises)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, json.dumps(body).encode(), headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
        return answer


def _operator_token(run_dir: Path) -> str:
    """What an operator pastes: ``livemesh admin token --role operator`` with the demo's key."""
    env = {**os.environ, "LIVEMESH_CREDENTIAL_KEY_FILE": str(run_dir / "credential.key")}
    command = [sys.executable, "-m", "command.cli", "admin", "token", "--role", "operator"]
    return subprocess.check_output(command, env=env, cwd=ROOT, text=True).strip()


def _sign_up_with_a_profile(page: Any, app: str) -> None:
    page.goto(app)
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Email").fill("ada@example.org")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    # the browser's own check first: nothing reaches the server, the field says why
    assert page.get_by_label("Password").evaluate("e => !e.validity.valid")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Create account").click()
    # blank passes the browser's `required` (spaces) but not the server: its field error
    # lands beside the field (the one refused request a test page may log)
    page.get_by_label("Profile name").fill("   ")
    page.get_by_role("button", name="Add profile").click()
    page.locator("#profile-name-error").filter(has_text="required").wait_for()
    assert page.get_by_label("Profile name").get_attribute("aria-invalid") == "true"
    page.get_by_label("Profile name").fill("Ada")
    page.get_by_role("button", name="Add profile").click()


def plays_live_for(page: Any, seconds: float) -> None:
    """The player page starts playing and its playhead moves ``seconds`` on, under the live
    badge (fails on a timeout otherwise)."""
    video = "document.getElementById('video')"
    page.wait_for_function(f"() => {video}?.dataset.playing === 'true'", timeout=30_000)
    started = page.evaluate(f"() => {video}.currentTime")
    page.wait_for_function(
        f"t => {video}.currentTime > t + {seconds}", arg=started, timeout=(seconds + 15) * 1000
    )
    page.locator("#live-badge").wait_for(state="visible")


def _watch(page: Any) -> tuple[int, str]:
    """Search as a person types, open the title, press play, watch WATCH_S s: the stalls,
    and the playback session's id."""
    page.get_by_label("Search titles").press_sequentially("demo", delay=80)
    page.locator(".results").get_by_role("link").first.click()
    # the title page puts the focus on Play: the keyboard presses it
    page.get_by_role("link", name="Play").wait_for()
    assert page.evaluate("() => document.activeElement.textContent").endswith("Play")
    with page.expect_response(lambda r: r.url.endswith("/v1/playback:start")) as started:
        page.keyboard.press("Enter")
    session_id = started.value.json()["session"]["name"].rsplit("/", 1)[-1]
    plays_live_for(page, WATCH_S)
    page.screenshot(path=IMG / "webapp-player.png")
    return int(page.locator("#stat-stalls").inner_text()), session_id


def test_a_viewer_watches_the_demo_and_an_operator_creates_a_channel(tmp_path: Path) -> None:
    assert not missing_setup(), f"run `make browser-deps`: missing {missing_setup()}"
    run_dir = tmp_path / "run"
    args = ["--free-ports", "--run-dir", str(run_dir)]
    with demo_stack(("app", "mpd"), args=args) as stack, chromium_page() as (page, log):
        app = stack.announced["app"]
        operator = _operator_token(run_dir)
        _post(f"{app}v1/experiments", LIVE_DELAY, operator)
        _post(f"{app}v1/experiments/live-delay-1:start", {}, operator)
        _sign_up_with_a_profile(page, app)
        home = page.get_by_role("region", name="Continue watching")
        assert "Nothing yet" in home.inner_text()
        page.screenshot(path=IMG / "webapp-home.png")

        stalls, session_id = _watch(page)
        assert stalls == 0, page.locator("#overlay").inner_text()
        # the player's CMCD names the playback session: its QoE joins the session's cell
        assert log.cmcd_sids() == {session_id}, log.text()
        assert page.locator("#stat-latency").inner_text().endswith(" s")  # a figure, in seconds

        # another profile has its own (empty) history; the first one's has the title
        page.get_by_role("button", name="Switch profile").click()
        page.get_by_label("Profile name").fill("Kid")
        page.get_by_role("button", name="Add profile").click()
        assert "Nothing yet" in home.inner_text()
        page.get_by_role("button", name="Switch profile").click()
        page.get_by_role("button", name="Ada", exact=True).click()
        home.locator('a[href="#/title/demo"]').wait_for()
        # a session past its expiry goes back to sign-in, saying why
        page.evaluate(EXPIRE_SESSION)
        page.reload()
        page.get_by_role("heading", name="Sign in").wait_for()
        assert "expired" in page.get_by_role("status").inner_text()

        page.goto(app + "console")
        page.get_by_label("Operator token").fill(operator)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_label("Channel id").fill("late-show")
        page.get_by_label("Display name").fill("The Late Show")
        page.get_by_role("button", name="Create channel").click()
        row = page.get_by_role("row", name="late-show")
        # no broadcaster has pushed to it: ingest runs nothing for it yet
        row.filter(has_text="Waiting for a broadcaster").wait_for()
        first_key = page.locator("#key output").inner_text().strip()
        assert first_key
        row.get_by_role("button", name="Rotate key").click()
        page.locator("#key output").filter(has_not_text=first_key).wait_for()
        page.screenshot(path=IMG / "console.png")
        _edges_and_experiments(page)

        # a viewer's token is no operator's: the console says so and asks for another
        page.get_by_role("button", name="Sign out").click()
        page.goto(app + "console#/edges")
        ada = {"email": "ada@example.org", "password": "correct horse battery"}
        page.get_by_label("Operator token").fill(
            _post(f"{app}v1/accounts:signIn", ada)["accessToken"]
        )
        page.get_by_role("button", name="Sign in").click()
        refused = page.get_by_role("status").filter(has_text="refused")
        assert "operator credential, not a viewer" in refused.inner_text()
        assert not _errors(log), log.console


def _edges_and_experiments(page: Any) -> None:
    """The operator's Edges panel shows the edges serving, with the QoE windows the viewer's
    player reported through one of them, charted; the Experiments panel reads out the
    live-delay experiment the viewer pressed play under, defines another (a malformed cell
    refused before anything is sent), starts it and reads it out."""
    page.get_by_role("link", name="Edges").click()
    page.get_by_role("row", name="edge-1").filter(has_text="Serving").wait_for()
    page.get_by_role("row", name="edge-2").filter(has_text="Serving").wait_for()
    # refreshed every 5 s: the viewer's last window is scored within one window of its end
    reported = page.locator("tr[data-edge]").filter(has_not_text="No players reported")
    reported.first.wait_for(timeout=30_000)
    assert float(reported.first.locator("td").nth(4).inner_text()) > 0  # its QoE score
    page.get_by_role("img", name="Rebuffer ratio").wait_for()
    page.screenshot(path=IMG / "console-edges.png", full_page=True)

    page.get_by_role("link", name="Experiments").click()
    delay = page.get_by_role("article", name="Live delay")
    delay.filter(has_text="Running").locator("table.readout").wait_for()
    assert delay.get_by_role("row", name="fast").locator("td").nth(1).inner_text() == "50.0 %"
    assert "Sample ratio: χ²" in delay.locator(".srm").inner_text()

    page.get_by_label("Experiment id").fill("rec-variant-1")
    page.get_by_label("Display name").fill("Recommendations")
    page.get_by_label("Decision").fill("rec-variant")
    page.get_by_label("Cells", exact=False).fill("co-views:3:a\npopular-2")
    page.get_by_role("button", name="Define experiment").click()
    page.locator("#experiment-cells-error").filter(has_text="name:weight:value").wait_for()
    page.get_by_label("Cells", exact=False).fill("co-views:3:a\npopular:1:b")
    page.get_by_role("button", name="Define experiment").click()
    card = page.get_by_role("article", name="Recommendations")
    card.filter(has_text="Not started").wait_for()
    card.get_by_role("button", name="Start").click()
    card.filter(has_text="Running").locator("table.readout").wait_for()
    assert card.get_by_role("row", name="popular").locator("td").nth(1).inner_text() == "25.0 %"
    assert "No sample ratio mismatch" in card.locator(".srm").inner_text()
    delay.scroll_into_view_if_needed()
    page.screenshot(path=IMG / "console-experiments.png", full_page=True)
