"""Render a local HTML file in real headless Chromium and collect JavaScript errors.

Stdlib only. Chromium is driven over the Chrome DevTools Protocol on
``--remote-debugging-pipe`` (the browser reads NUL-terminated JSON messages on fd 3 and
writes replies/events on fd 4), so one browser process yields the rendered DOM, a PNG
screenshot and every console error of the page:

* ``Runtime.exceptionThrown``      -- uncaught exceptions and unhandled promise rejections
* ``Runtime.consoleAPICalled``     -- ``console.error(...)`` / failed ``console.assert(...)``
* ``Log.entryAdded`` (level error) -- browser-side errors: failed resource loads (404 of a
  ``<script src>``), CSP violations, ...

Install the browser with ``scripts/install_browser.sh`` (Debian ``chromium``). The binary
is taken from ``$ESM_TCAV_CHROMIUM`` or the first of chromium / chromium-browser /
google-chrome on PATH.

Usage::

    from tests.browser import render_html
    res = render_html("report.html", "report.png")
    assert res.console_errors == []
    assert "<h1>" in res.dom
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BrowserError", "BrowserNotFound", "BrowserResult", "find_chromium", "render_html"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    """Chromium failed to start, crashed, or did not answer in time."""


class BrowserNotFound(BrowserError):
    """No Chromium binary: run scripts/install_browser.sh."""


@dataclass
class BrowserResult:
    dom: str
    """Serialized DOM after the page loaded and scripts ran (``<!DOCTYPE ...>`` + outerHTML)."""
    console_errors: list[str]
    """Uncaught exceptions, console.error/assert calls and browser error log entries."""
    console_messages: list[str] = field(default_factory=list)
    """Every console API call as ``"<type>: <text>"`` (log, info, warning, error, ...)."""
    screenshot: Path | None = None
    title: str = ""


def find_chromium() -> str:
    env = os.environ.get("ESM_TCAV_CHROMIUM")
    if env:
        return env
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserNotFound("chromium not found on PATH: run scripts/install_browser.sh")


class _Pipe:
    """Minimal CDP client over the two pipes of ``--remote-debugging-pipe``."""

    def __init__(self, write_fd: int, read_fd: int, proc: subprocess.Popen[bytes]) -> None:
        self._w = write_fd
        self._r = read_fd
        self._proc = proc
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self._w, data)
            data = data[n:]
        return self._next_id

    def _read_one(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for chromium")
            ready, _, _ = select.select([self._r], [], [], min(left, 0.5))
            if not ready:
                if self._proc.poll() is not None:
                    raise BrowserError(f"chromium exited with code {self._proc.returncode}")
                continue
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise BrowserError("chromium closed the debugging pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30.0) -> dict[str, Any]:
        msg_id = self.send(method, params, session)
        deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="esm-tcav-chromium-") as profile:
        log_path = Path(profile) / "chromium-stderr.log"
        with open(log_path, "wb") as log:
            # Chromium wants the pipe ends on fds 3 and 4 exactly: let /bin/sh move them.
            proc = subprocess.Popen(
                ["/bin/sh", "-c", 'exec "$0" "$@" 3<&"$CDP_IN" 4>&"$CDP_OUT"',
                 exe, *_FLAGS, f"--user-data-dir={profile}/profile",
                 f"--window-size={width},{height}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                pass_fds=(to_chrome_r, from_chrome_w),
                env={**os.environ, "CDP_IN": str(to_chrome_r), "CDP_OUT": str(from_chrome_w)},
                start_new_session=True,
            )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        cdp = _Pipe(to_chrome_w, from_chrome_r, proc)
        try:
            left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
            tid = cdp.call("Target.createTarget", {"url": "about:blank"}, timeout=left())
            sess = cdp.call("Target.attachToTarget",
                            {"targetId": tid["targetId"], "flatten": True},
                            timeout=left())["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                cdp.call(f"{domain}.enable", session=sess, timeout=left())
            cdp.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1,
                      "mobile": False}, session=sess, timeout=left())
            cdp.events.clear()
            nav = cdp.call("Page.navigate", {"url": target}, session=sess, timeout=left())
            if nav.get("errorText"):
                raise BrowserError(f"navigation to {target} failed: {nav['errorText']}")
            cdp.wait_event("Page.loadEventFired", timeout=left())
            cdp.drain(min(settle, max(0.0, deadline - time.monotonic())))
            res = cdp.call(
                "Runtime.evaluate",
                {"expression": "(document.doctype ? new XMLSerializer()"
                 ".serializeToString(document.doctype) + '\\n' : '')"
                 " + document.documentElement.outerHTML",
                 "returnByValue": True},
                session=sess, timeout=left())
            dom = res.get("result", {}).get("value", "")
            title = cdp.call("Runtime.evaluate",
                             {"expression": "document.title", "returnByValue": True},
                             session=sess, timeout=left()).get("result", {}).get("value", "")
            shot_path: Path | None = None
            if screenshot_png is not None:
                shot = cdp.call("Page.captureScreenshot",
                                {"format": "png", "captureBeyondViewport": full_page},
                                session=sess, timeout=left())
                shot_path = Path(screenshot_png)
                shot_path.parent.mkdir(parents=True, exist_ok=True)
                shot_path.write_bytes(base64.b64decode(shot["data"]))
            errors, messages = _collect(cdp.events)
            try:
                cdp.send("Browser.close")
            except OSError:
                pass
        except BrowserError as exc:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
            raise BrowserError(f"{exc}\n--- chromium stderr (tail) ---\n{tail}") from exc
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            for fd in (to_chrome_w, from_chrome_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
    return BrowserResult(dom=dom, console_errors=errors, console_messages=messages,
                         screenshot=shot_path, title=title)

