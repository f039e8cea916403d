"""The web channel in a real browser: headless Chromium (Debian's package) via Playwright.

A real SupportApp with no token at all (the newcomer's path: web channel only, no desk),
a temp database and the sample knowledge base. One visitor page and one agent page play
the issue's scenario. Screenshots go to out/screenshots (ignored by git) on every run;
`make screenshots` writes them to docs/screenshots, the README's copies.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from bot.app import SupportApp
from bot.config import Secrets
from handlers.web import WebTransport
from tests.fakes.clock import FakeClock
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
XSS = "<img src=x onerror=alert(1)>"


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


@pytest.fixture
async def base(tmp_path: Path) -> AsyncIterator[str]:
    settings = settings_for(tmp_path, web={"port": 0})
    app = SupportApp(settings, Secrets(web_agent_keys=f"Paul:{KEY}"), clock=FakeClock())
    await app.start()
    try:
        web = next(t for t in app.transports if isinstance(t, WebTransport))
        yield f"http://127.0.0.1:{web.port}"
    finally:
        await app.stop()


async def say(page: Page, text: str) -> None:
    box = page.get_by_label("Votre message")
    await box.fill(text)
    await box.press("Enter")


async def test_visitor_and_agent_in_the_browser(browser: Browser, base: str) -> None:
    alerts: list[str] = []
    visitor = await browser.new_page(viewport={"width": 1100, "height": 760})
    visitor.on("dialog", lambda d: alerts.append(d.message))
    await visitor.goto(base + "/")
    await visitor.get_by_role("button", name="Discuter avec le support").click()
    await say(visitor, "Quel est le délai de livraison ?")
    await expect(visitor.get_by_text("Colissimo")).to_be_visible()
    await say(visitor, "je veux parler à un conseiller")
    await expect(visitor.get_by_text("en relation avec un conseiller")).to_be_visible()
    await say(visitor, XSS)
    await expect(visitor.get_by_text(XSS)).to_be_visible()
    assert await visitor.locator("img").count() == 0

    agent = await browser.new_page(viewport={"width": 1280, "height": 800})
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

    await agent.get_by_label("Sujet").fill("livraison")
    await agent.get_by_role("button", name="Résoudre").click()
    await expect(agent.locator("#resolved button")).to_have_count(1)
    await visitor.get_by_role("button", name="9", exact=True).click()
    await visitor.get_by_role("button", name="Très satisfait 😍").click()
    await expect(visitor.get_by_role("button", name="Passer")).to_be_visible()
    await expect(visitor.get_by_role("button", name="9", exact=True)).to_be_disabled()
    assert alerts == []

    await agent.goto(f"{base}/dashboard")  # the console's session cookie opens it; today included
    await expect(agent.locator('[data-kpi="nps"]')).to_have_text(re.compile(r"^\+?100\b"))
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
