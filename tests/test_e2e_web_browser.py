"""The web channel in a real browser: headless Chromium (Debian's package) via Playwright.

A real SupportApp with no token at all (the newcomer's path: web channel only, no desk),
a temp database and the sample knowledge base. One visitor page and one agent page play
the issue's scenario; smaller tests cover the console's alerts, its phone layout and its
buttons, and the widget's greeting, scrolling, limit and timestamps. Pages run in the
Europe/Paris zone, so the fake clock's 10:00 UTC reads 11:00. Screenshots go to
out/screenshots (ignored by git) on every run; `make screenshots` writes them to
docs/screenshots, the README's copies.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, Route, async_playwright, expect

from bot.app import SupportApp
from bot.config import Secrets
from bot.errors import StorageError
from handlers.web import WebTransport
from tests.fakes.clock import FakeClock
from tests.fakes.failing import fail_once
from tests.test_app import settings_for

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / os.environ.get("SUPPORTBOT_SCREENSHOTS", "out/screenshots")
KEY = "paul-key-2468-0123456789"
KEY_MARIE = "marie-key-1357-0123456789"
XSS = "<img src=x onerror=alert(1)>"
ZONE = "Europe/Paris"
LIMIT = 1200  # web.max_message_length of the limit's test (the default is 4000)
PHONE = {"width": 390, "height": 844}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    # Fails (never skips) when Chromium is missing: `make test` installs it.
    assert shutil.which(CHROMIUM), f"{CHROMIUM} missing: apt-get install chromium"
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Running:
    base: str
    clock: FakeClock
    web: WebTransport


@asynccontextmanager
async def running(tmp_path: Path, **web: Any) -> AsyncIterator[Running]:
    settings = settings_for(tmp_path, web={"port": 0, **web})
    clock = FakeClock()
    keys = f"Paul:{KEY},Marie:{KEY_MARIE}"
    app = SupportApp(settings, Secrets(web_agent_keys=keys), clock=clock)
    await app.start()
    try:
        web_transport = next(t for t in app.transports if isinstance(t, WebTransport))
        yield Running(f"http://127.0.0.1:{web_transport.port}", clock, web_transport)
    finally:
        await app.stop()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Running]:
    async with running(tmp_path) as app:
        yield app


@pytest.fixture
def base(served: Running) -> str:
    return served.base


async def say(page: Page, text: str) -> None:
    box = page.get_by_label("Votre message")
    await box.fill(text)
    await box.press("Enter")


async def visitor_waiting(browser: Browser, base: str) -> Page:
    """A visitor who asked for a person (the conversation is queued)."""
    visitor = await browser.new_page(timezone_id=ZONE)
    await visitor.goto(base + "/")
    await visitor.get_by_role("button", name="Discuter avec le support").click()
    await say(visitor, "je veux parler à un conseiller")
    await expect(visitor.get_by_text("en relation avec un conseiller")).to_be_visible()
    return visitor


async def console(browser: Browser, base: str, key: str = KEY, **page: Any) -> Page:
    agent = await browser.new_page(timezone_id=ZONE, **page)
    await agent.goto(base + "/agent")
    await agent.get_by_label("Clé agent").fill(key)
    await agent.get_by_role("button", name="Se connecter").click()
    await expect(agent.locator("#me")).not_to_be_empty()
    return agent


async def test_visitor_and_agent_in_the_browser(browser: Browser, base: str) -> None:
    alerts: list[str] = []
    visitor = await browser.new_page(viewport={"width": 1100, "height": 760}, timezone_id=ZONE)
    visitor.on("dialog", lambda d: alerts.append(d.message))
    await visitor.goto(base + "/")
    await visitor.get_by_role("button", name="Discuter avec le support").click()
    await say(visitor, "Quel est le délai de livraison ?")
    await expect(visitor.get_by_text("Colissimo")).to_be_visible()
    await expect(visitor.locator("time").first).to_have_text("11:00")
    await say(visitor, "je veux parler à un conseiller")
    await expect(visitor.get_by_text("en relation avec un conseiller")).to_be_visible()
    await say(visitor, XSS)
    await expect(visitor.get_by_text(XSS)).to_be_visible()
    assert await visitor.locator("img").count() == 0

    agent = await browser.new_page(viewport={"width": 1280, "height": 800}, timezone_id=ZONE)
    agent.on("dialog", lambda d: alerts.append(d.message))
    await agent.goto(base + "/agent")
    await agent.get_by_label("Clé agent").fill("not-the-key")
    await agent.get_by_role("button", name="Se connecter").click()
    await expect(agent.get_by_text("Clé refusée.")).to_be_visible()
    await agent.get_by_label("Clé agent").fill(KEY)
    await agent.get_by_role("button", name="Se connecter").click()
    await expect(agent.locator("#me")).to_have_text("Paul")
    await agent.locator("#queue button").first.click()
    await expect(agent.locator("#transcript").get_by_text(XSS)).to_be_visible()
    assert await agent.locator("img").count() == 0
    await agent.get_by_role("button", name="Prendre").click()
    await expect(agent.locator("#mine button")).to_have_count(1)
    await agent.get_by_label("Réponse au client").fill("Bonjour, je regarde votre colis.")
    await agent.get_by_role("button", name="Envoyer").click()
    await expect(visitor.get_by_text("je regarde votre colis")).to_be_visible()
    await visitor.screenshot(path=str(SHOTS / "widget.png"))
    await agent.screenshot(path=str(SHOTS / "agent.png"))

    await agent.get_by_label("Sujet", exact=True).fill("livraison")
    await agent.get_by_role("button", name="Résoudre").click()
    await expect(agent.locator("#resolved button")).to_have_count(1)
    await expect(agent.locator("#transcript time").first).to_have_text("11:00")
    await visitor.get_by_role("button", name="9", exact=True).click()
    faces = visitor.get_by_role("group").last.get_by_role("button")
    await expect(faces).to_have_text(["😡 1", "🙁 2", "😐 3", "🙂 4", "😍 5"])  # no emoji font?
    await visitor.get_by_role("button", name="Très satisfait 😍").click()
    await expect(visitor.get_by_role("button", name="Passer")).to_be_visible()
    await expect(visitor.get_by_role("button", name="9", exact=True)).to_be_disabled()
    assert alerts == []

    await agent.goto(f"{base}/dashboard")  # the console's session cookie opens it; today included
    await expect(agent.locator('[data-kpi="nps"]')).to_have_text(re.compile(r"^\+?100\b"))
    await expect(agent.locator('[data-kpi="csat_detail"]')).to_have_text(
        "moyenne 5,0 / 5 · 1 réponse"
    )
    await agent.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)


async def test_reload_resumes_the_conversation(browser: Browser, base: str) -> None:
    page = await browser.new_page()
    await page.goto(base + "/")
    await page.get_by_role("button", name="Discuter avec le support").click()
    await say(page, "Quel est le délai de livraison ?")
    await expect(page.get_by_text("Colissimo")).to_be_visible()
    await page.get_by_role("button", name="Oui, merci").click()
    await expect(page.get_by_role("button", name="Oui, merci")).to_be_disabled()
    await page.reload()
    await page.get_by_role("button", name="Discuter avec le support").click()
    await expect(page.get_by_text("Colissimo")).to_be_visible()
    await expect(page.get_by_role("button", name="Oui, merci")).to_be_disabled()
    await page.keyboard.press("Escape")
    await expect(page.get_by_label("Votre message")).to_be_hidden()


# ---------------------------------------------------------------- agent console


async def test_console_alerts_view_and_unread_badge(browser: Browser, served: Running) -> None:
    base = served.base
    paul = await console(browser, base)
    badge = paul.locator("#alerts-badge")
    await expect(badge).to_be_hidden()
    await visitor_waiting(browser, base)
    served.clock.advance(timedelta(minutes=5))  # still waiting: the reminder alert
    await expect(badge).to_have_text("1")  # pushed live
    marie = await console(browser, base, key=KEY_MARIE)  # connects later: kept for her too
    await expect(marie.locator("#alerts-badge")).to_have_text("1")
    await paul.get_by_role("button", name="Alertes").click()
    alert = paul.locator("#alerts li")
    await expect(alert).to_have_count(1)
    await expect(alert).to_contain_text("Conversation #1 en attente depuis 5 min.")
    await expect(alert.locator("time")).to_have_text("11:05")
    await expect(badge).to_be_hidden()  # read by Paul…
    await marie.reload()
    await expect(marie.locator("#alerts-badge")).to_have_text("1")  # …not by Marie
    await alert.get_by_role("button", name="Ouvrir #1").click()
    await expect(paul.locator("#conv-title")).to_contain_text("#1")
    await expect(paul.locator("#alerts-view")).to_be_hidden()


async def test_console_works_on_a_phone(browser: Browser, base: str) -> None:
    await visitor_waiting(browser, base)
    agent = await console(browser, base, viewport=PHONE)
    await agent.locator("#queue button").first.click()
    reply = agent.get_by_label("Réponse au client")
    await expect(reply).to_be_visible()
    box = await reply.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE["width"]
    assert box["width"] >= 300  # the whole width, not what a 320 px column leaves
    for name in ("Prendre", "Résoudre", "Transférer"):
        button = await agent.get_by_role("button", name=name).bounding_box()
        assert button is not None
        assert button["x"] + button["width"] <= PHONE["width"], name
    width = await agent.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]  # nothing to scroll sideways
    await agent.get_by_role("button", name="Prendre").click()
    await expect(agent.locator("#conv-status")).to_contain_text("Pris — Paul")
    await agent.get_by_role("button", name="← Conversations").click()
    await expect(agent.locator("#mine button")).to_have_count(1)
    await expect(reply).to_be_hidden()


async def test_console_refuses_clearly_and_resets_per_conversation(
    browser: Browser, base: str
) -> None:
    await visitor_waiting(browser, base)
    await visitor_waiting(browser, base)
    agent = await console(browser, base)
    errors: list[str] = []
    agent.on("pageerror", lambda exc: errors.append(str(exc)))
    await agent.locator('#queue button[data-conversation="1"]').click()
    await agent.get_by_label("Sujet", exact=True).fill("facture")
    await agent.get_by_label("Réponse au client").fill("Brouillon pour #1")
    await agent.get_by_role("button", name="Transférer").click()  # to the queue it is in
    notice = agent.locator("#notice")
    await expect(notice).to_contain_text("déjà dans la file d'attente")
    await agent.locator('#queue button[data-conversation="2"]').click()
    await expect(agent.locator("#conv-title")).to_contain_text("#2")
    await expect(agent.get_by_label("Sujet", exact=True)).to_have_value(
        ""
    )  # a resolve tags #2 only
    await expect(notice).to_have_text("")
    await expect(agent.get_by_label("Réponse au client")).to_have_value("")
    await agent.locator('#queue button[data-conversation="1"]').click()
    await expect(agent.get_by_label("Réponse au client")).to_have_value("Brouillon pour #1")
    assert errors == []


async def test_console_buttons_wait_for_their_request(browser: Browser, base: str) -> None:
    await visitor_waiting(browser, base)
    agent = await console(browser, base)
    await agent.locator("#queue button").first.click()
    release = asyncio.Event()
    posted: list[str] = []

    async def held(route: Route) -> None:
        posted.append(route.request.url)
        await release.wait()
        await route.continue_()

    await agent.route("**/api/agent/conversations/*/take", held)
    take = agent.get_by_role("button", name="Prendre")
    try:
        await take.click()
        for name in ("Prendre", "Résoudre", "Transférer", "Envoyer", "Note interne"):
            await expect(agent.get_by_role("button", name=name)).to_be_disabled()
        await take.click(force=True)  # a double-click: the disabled button does nothing
        assert len(posted) == 1
    finally:
        release.set()  # never leave the request hanging, even when a check failed
    await expect(agent.locator("#notice")).to_have_text("Pris en charge par Paul")
    await expect(agent.get_by_role("button", name="Résoudre")).to_be_enabled()
    await expect(take).to_be_disabled()  # taken: stays off, by state now
    assert len(posted) == 1


async def test_console_followup_contacted_then_resolved(browser: Browser, base: str) -> None:
    """A detractor's NPS opens a follow-up; the agent works it from the console's list."""
    visitor = await visitor_waiting(browser, base)
    agent = await console(browser, base)
    await agent.locator("#queue button").first.click()
    await agent.get_by_role("button", name="Prendre").click()
    await expect(agent.locator("#mine button")).to_have_count(1)
    await agent.get_by_role("button", name="Résoudre").click()
    await expect(agent.locator("#resolved button")).to_have_count(1)
    await visitor.get_by_role("button", name="4", exact=True).click()
    await expect(visitor.get_by_role("button", name="Très satisfait 😍")).to_be_visible()
    await agent.reload()  # the list loads as the console shows
    followups = agent.locator("#followups li")
    await expect(followups).to_have_count(1)
    await expect(followups).to_contain_text("#1")
    await expect(followups).to_contain_text("NPS 4")
    await expect(followups).to_contain_text("à contacter")
    await followups.get_by_role("button", name="Contacté").click()
    await expect(followups).to_contain_text("contacté")
    await expect(agent.locator("#followups-notice")).not_to_be_empty()
    await agent.get_by_label("Résultat du suivi #1").fill("Bon d'achat envoyé")
    await followups.get_by_role("button", name="Résolu").click()
    await expect(followups).to_have_count(0)  # the list shows the open ones
    response = await agent.request.get(base + "/api/agent/followups")
    [item] = (await response.json())["followups"]
    assert (item["status"], item["note"], item["owner_name"]) == (
        "resolved",
        "Bon d'achat envoyé",
        "Paul",
    )
    assert item["contacted_at"] is not None


async def test_console_complaint_selects_at_resolution(browser: Browser, base: str) -> None:
    await visitor_waiting(browser, base)
    agent = await console(browser, base)
    errors: list[str] = []
    agent.on("pageerror", lambda exc: errors.append(str(exc)))
    await agent.locator("#queue button").first.click()
    record = agent.locator("#complaint-record")
    await expect(record).to_have_text("Cette conversation n'est pas une réclamation.")
    await agent.get_by_role("button", name="Prendre").click()
    await agent.get_by_role("button", name="Marquer comme réclamation").click()
    await expect(record).to_contain_text("Cause : non renseignée")
    await expect(agent.get_by_role("button", name="Marquer comme réclamation")).to_be_hidden()
    cause = agent.get_by_label("Cause", exact=True)
    await expect(cause.locator("option", has_text="colis endommagé")).to_have_count(1)
    await cause.select_option(label="colis endommagé")
    await agent.get_by_label("Catégorie", exact=True).select_option(label="livraison")
    await agent.get_by_label("Solution proposée").select_option(label="Remplacement")
    await agent.get_by_label("Note sur la solution").fill("Nouveau colis parti ce jour")
    await agent.get_by_label("Sujet", exact=True).fill("livraison")
    await agent.screenshot(path=str(SHOTS / "agent-complaint.png"))
    await agent.get_by_role("button", name="Résoudre").click()
    await expect(agent.locator("#resolved button")).to_have_count(1)
    await expect(record).to_have_text(
        "Cause : colis endommagé · Catégorie : livraison · Solution : Remplacement · "
        "Note : Nouveau colis parti ce jour"
    )
    await expect(agent.get_by_label("Cause", exact=True)).to_have_value("")  # sent, cleared
    response = await agent.request.get(base + "/api/agent/conversations/1/complaint")
    stored = (await response.json())["complaint"]
    assert (stored["cause"], stored["category"], stored["solution"], stored["note"]) == (
        "colis endommagé",
        "livraison",
        "replacement",
        "Nouveau colis parti ce jour",
    )
    assert stored["opened_by"] == "web:Paul"

    await agent.goto(base + "/dashboard")  # the chart of causes, beside their table
    chart = agent.locator("#chart-causes")
    bar = chart.locator("svg rect title", has_text="Cette période: 1")
    await expect(bar).to_have_text("colis endomma… — Cette période: 1")
    rows = chart.locator(".data tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_text(re.compile(r"^colis endommagé\s*1\s*100 %\s*0$"))
    await agent.screenshot(path=str(SHOTS / "dashboard-causes.png"), full_page=True)
    assert errors == []


# ---------------------------------------------------------------- widget

EN_PAGE = '<!doctype html><title>Shop</title><script src="{src}" data-lang="en" defer></script>'


@asynccontextmanager
async def english_shop(tmp_path: Path) -> AsyncIterator[tuple[str, Running]]:
    """Another site (its own local server) embedding the widget with data-lang="en"."""
    served: list[str] = []

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=EN_PAGE.format(src=served[0] + "/widget.js"),
                            content_type="text/html")  # fmt: skip

    shop = web.Application()
    shop.router.add_get("/", page)
    runner = web.AppRunner(shop)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with running(tmp_path, allowed_origins=[origin]) as app:
            served.append(app.base)
            yield origin, app
    finally:
        await runner.cleanup()


async def test_widget_greets_in_its_language(browser: Browser, tmp_path: Path) -> None:
    async with english_shop(tmp_path) as (shop, served):
        french = await browser.new_page()
        await french.goto(served.base + "/")
        await french.get_by_role("button", name="Discuter avec le support").click()
        await expect(french.get_by_text("Je suis l'assistant du service client")).to_be_visible()
        english = await browser.new_page()
        await english.goto(shop)
        await english.get_by_role("button", name="Chat with support").click()
        greeting = english.get_by_text("I'm the customer service assistant")
        await expect(greeting).to_be_visible()
        await english.reload()  # greeted once: the reload shows the same greeting, alone
        await english.get_by_role("button", name="Chat with support").click()
        await expect(greeting).to_have_count(1)


async def test_widget_reopens_at_the_latest_question(browser: Browser, base: str) -> None:
    page = await browser.new_page(viewport=PHONE)
    await page.goto(base + "/")
    await page.get_by_role("button", name="Discuter avec le support").click()
    await say(page, "Quel est le délai de livraison ?")
    await page.get_by_role("button", name="Oui, merci").click()
    await expect(page.get_by_role("button", name="10", exact=True)).to_be_visible()
    await say(page, "je ne sais pas")  # re-prompted: a second scale of 0…10
    await expect(page.get_by_role("button", name="10", exact=True)).to_have_count(2)
    await page.reload()
    await page.get_by_role("button", name="Discuter avec le support").click()
    latest = page.get_by_role("button", name="10", exact=True).last
    await expect(latest).to_be_in_viewport()  # not scrolled to the greeting
    await expect(page.get_by_text("Je suis l'assistant du service client")).not_to_be_in_viewport()


async def test_widget_limits_the_box_and_keeps_what_it_could_not_send(
    browser: Browser, tmp_path: Path
) -> None:
    # Three messages a minute (the greeting uses one), a shorter limit than the default.
    async with running(tmp_path, rate_limit="3/60s", max_message_length=LIMIT) as served:
        page = await browser.new_page()
        await page.goto(served.base + "/")
        await page.get_by_role("button", name="Discuter avec le support").click()
        await expect(page.get_by_text("Je suis l'assistant du service client")).to_be_visible()
        box = page.get_by_label("Votre message")
        await expect(box).to_have_attribute("maxlength", str(LIMIT))
        await box.focus()
        await page.keyboard.insert_text("x" * 10_000)  # a paste
        assert len(await box.input_value()) == LIMIT
        await expect(page.get_by_text(f"{LIMIT} / {LIMIT} caractères")).to_be_visible()
        await box.fill("")
        await expect(page.get_by_text(f"0 / {LIMIT} caractères")).to_be_visible()
        sent = page.locator(".msg.customer")
        for count, text in enumerate(("un", "deux"), start=1):
            await say(page, text)
            await expect(sent).to_have_count(count)
        await say(page, "trois, et tout ce que j'ai écrit")  # one too many: refused
        await expect(page.get_by_text("Doucement !")).to_be_visible()
        await expect(box).to_have_value("trois, et tout ce que j'ai écrit")  # never lost


async def test_widget_gives_back_a_message_the_database_did_not_store(
    browser: Browser, served: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_once(monkeypatch, served.web.store, "append", StorageError("database is locked"))
    page = await browser.new_page()
    await page.goto(served.base + "/")
    await page.get_by_role("button", name="Discuter avec le support").click()
    await expect(page.get_by_text("Je suis l'assistant du service client")).to_be_visible()
    box = page.get_by_label("Votre message")
    await say(page, "où en est ma commande 1234 ?")
    await expect(page.get_by_text("Service momentanément indisponible")).to_be_visible()
    await expect(box).to_have_value("où en est ma commande 1234 ?")  # never lost
    await expect(page.locator(".msg.customer")).to_have_count(0)
    await box.press("Enter")  # sent again, as it was
    sent = page.locator(".msg.customer")
    await expect(sent).to_have_count(1)
    await expect(sent).to_contain_text("où en est ma commande 1234 ?")
    await expect(box).to_have_value("")
