"""Open a local HTML file in headless Chromium (Debian's package, driven by playwright) with the network cut off.

:func:`chromium` starts the browser; :func:`open_page` loads the file in it, waits until it has rendered, saves a
full-page screenshot and yields a
:class:`RenderedPage`: what the page logged (console errors and warnings, uncaught exceptions), every request it made
beyond the document itself, and the playwright :class:`~playwright.sync_api.Page` for further queries.

The network is cut three ways, so a report that reaches out fails its test instead of loading quietly:

* the browser context is offline (``navigator.onLine`` is false, requests fail);
* a route aborts every request whose URL is not ``file://`` and records it (:attr:`RenderedPage.blocked`);
* ``--host-resolver-rules`` makes every host name unresolvable, so nothing the browser does on its own (outside
  the page, which the route does not see) reaches a DNS server either.

The browser is the ``chromium`` Debian package (``make test`` installs it); ``playwright install`` is never run, as
it downloads a browser build, which a closed network cannot fetch. A missing chromium fails the test, never skips it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Request, Route, WebSocket, sync_playwright

#: Where the Debian package puts the browser (a shell wrapper around /usr/lib/chromium/chromium).
CHROMIUM = Path("/usr/bin/chromium")

LAUNCH_ARGS = (
    "--no-sandbox",  # chromium refuses to start as root with its sandbox on (CI and this VM run as root)
    "--disable-gpu",  # no GPU on CI; the software rasteriser draws the screenshot
    "--disable-quic",
    "--no-first-run",
    # Without these chromium reaches for Google on its own (updates, field trials, sync) on a closed network.
    # Debian's wrapper would add --disable-background-networking itself, but not when /etc/chromium.d enables
    # remote extensions, as the package's default file does.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Even with the flags above chromium 156 still looked up accounts.google.com (seen with strace): no host
    # name resolves, so nothing leaves the machine. The page's own requests never get this far (see the route).
    "--host-resolver-rules=MAP * ~NOTFOUND",
)

#: A fixed window, so screenshots and layouts compare across machines.
VIEWPORT_WIDTH = 1280
VIEWPORT_HEIGHT = 900


@dataclass
class RenderedPage:
    """A page loaded by :func:`open_page`; the lists keep growing while the page stays open."""

    page: Page
    screenshot: Path
    #: ``console.error`` calls and the browser's own errors (such as a resource that failed to load).
    console_errors: list[str] = field(default_factory=list)
    console_warnings: list[str] = field(default_factory=list)
    #: Uncaught exceptions (``pageerror`` events).
    page_errors: list[str] = field(default_factory=list)
    #: Every request after the document itself, allowed (``file://``) or not, and WebSocket connections (``data:``
    #: URLs, as a self-contained page embeds things, are not requests).
    requests: list[str] = field(default_factory=list)
    #: Requests stopped because they would have left the machine (not ``file://``), WebSockets included.
    blocked: list[str] = field(default_factory=list)
    #: Requests that failed, as ``url (reason)``; blocked requests are here too.
    failed: list[str] = field(default_factory=list)


def chromium_path() -> Path:
    """The chromium executable; fails the test (never skips it) when it is missing."""
    if CHROMIUM.is_file():
        return CHROMIUM
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            f"chromium is missing (neither {CHROMIUM} nor `chromium` on PATH): run `make test`, which installs the "
            "Debian package chromium (as CI does); playwright drives it and never downloads a browser",
            pytrace=False,
        )
    return Path(found)


def _remote(url: str) -> bool:
    """Whether loading ``url`` would leave the machine (anything but a local file)."""
    return not url.startswith("file:")


def _where(message: ConsoleMessage) -> str:
    location = message.location
    url = location.get("url") if location else None
    return f"{message.text} ({url}:{location.get('lineNumber')})" if url else message.text


@contextmanager
def chromium() -> Iterator[Browser]:
    """Headless chromium, network off (:data:`LAUNCH_ARGS`); closed when the block exits. Starting it takes ~1 s."""
    executable = chromium_path()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, args=list(LAUNCH_ARGS), headless=True)
        except Error as exc:
            pytest.fail(f"playwright could not start {executable} (too old or too new for playwright?): {exc}")
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def open_page(browser: Browser, html: Path, screenshot: Path) -> Iterator[RenderedPage]:
    """Load ``html`` offline in a fresh context of ``browser``, save a full-page PNG to ``screenshot``.

    Yields what was seen once the page has loaded (the ``load`` event) and painted twice; the context (the page,
    its cookies and storage) closes when the block exits.
    """
    url = html.resolve().as_uri()
    context = browser.new_context(
        offline=True,
        service_workers="block",
        viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT},
    )
    try:
        page = context.new_page()
        seen = RenderedPage(page=page, screenshot=screenshot)

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                seen.console_errors.append(_where(message))
            elif message.type == "warning":
                seen.console_warnings.append(_where(message))

        def on_request(request: Request) -> None:
            if request.url != url:
                seen.requests.append(request.url)

        def on_failed(request: Request) -> None:
            seen.failed.append(f"{request.url} ({request.failure})")

        def on_websocket(socket: WebSocket) -> None:
            # The route does not see WebSockets; the offline context and the resolver rule stop them
            seen.requests.append(socket.url)
            seen.blocked.append(socket.url)

        def block(route: Route) -> None:
            seen.blocked.append(route.request.url)
            route.abort("blockedbyclient")

        context.route(_remote, block)
        page.on("console", on_console)
        page.on("pageerror", lambda error: seen.page_errors.append(f"{error.name}: {error.message}"))
        page.on("websocket", on_websocket)
        context.on("request", on_request)
        context.on("requestfailed", on_failed)

        page.goto(url, wait_until="load")
        # Two animation frames: scripts that draw after load have run, and the result has been painted
        page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
        page.screenshot(path=screenshot, full_page=True)
        yield seen
    finally:
        context.close()
