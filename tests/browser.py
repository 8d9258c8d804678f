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
import signal
import subprocess
import sys
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

# Chromium wants the CDP pipe on fds 3 (its input) and 4 (its output) exactly; this tiny
# Python trampoline moves the inherited pipe ends there and execs the browser
# (dash's `3<&N` cannot handle N > 9, and preexec_fn is not thread-safe).
_TRAMPOLINE = (
    "import fcntl, os, sys\n"
    "a, b = int(sys.argv[1]), int(sys.argv[2])\n"
    "i, o = fcntl.fcntl(a, fcntl.F_DUPFD, 10), fcntl.fcntl(b, fcntl.F_DUPFD, 10)\n"
    "os.dup2(i, 3)\n"
    "os.dup2(o, 4)\n"
    "for fd in {a, b, i, o} - {3, 4}:\n"
    "    os.close(fd)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)

_DOM_JS = (
    "(document.doctype ? new XMLSerializer().serializeToString(document.doctype) + '\\n' : '')"
    " + document.documentElement.outerHTML"
)


class BrowserError(RuntimeError):
    """Chromium failed to start, crashed, or did not answer in time."""


class BrowserNotFound(BrowserError):
    """No Chromium binary: run scripts/install_browser.sh."""


@dataclass
class BrowserResult:
    dom: str
    """Serialized DOM after the page loaded and scripts ran (doctype + outerHTML)."""
    console_errors: list[str]
    """Uncaught exceptions, console.error/assert calls and browser error-log entries."""
    console_messages: list[str] = field(default_factory=list)
    """Every console API call as ``"<type>: <text>"`` (log, info, warning, error, ...)."""
    screenshot: Path | None = None
    title: str = ""


def find_chromium() -> str:
    env = os.environ.get("ESM_TCAV_CHROMIUM")
    if env:
        return shutil.which(env) or env
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserNotFound("chromium not found on PATH: run scripts/install_browser.sh")


class _Cdp:
    """Minimal CDP client over the two pipes of ``--remote-debugging-pipe``."""

    def __init__(self, write_fd: int, read_fd: int, proc: subprocess.Popen[bytes]) -> None:
        self._w = write_fd
        self._r = read_fd
        self._proc = proc
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._w, data) :]
        return self._next_id

    def _read_one(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for chromium")
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

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        *,
        deadline: float,
    ) -> dict[str, Any]:
        msg_id = self.send(method, params, session)
        while True:
            msg = self._read_one(deadline)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_event(self, method: str, *, deadline: float) -> dict[str, Any]:
        for ev in self.events:
            if ev["method"] == method:
                return ev
        while True:
            msg = self._read_one(deadline)
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg

    def drain(self, seconds: float) -> None:
        """Collect events for ``seconds`` (late errors from timers / promises)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                msg = self._read_one(deadline)
                if "method" in msg:
                    self.events.append(msg)
        except TimeoutError:
            pass


def _remote_object_text(obj: dict[str, Any]) -> str:
    if "value" in obj:
        val = obj["value"]
        return val if isinstance(val, str) else json.dumps(val)
    return str(obj.get("description") or obj.get("unserializableValue") or obj.get("type", ""))


def _exception_text(details: dict[str, Any]) -> str:
    exc = details.get("exception") or {}
    prefix = details.get("text") or "Uncaught"  # "Uncaught" or "Uncaught (in promise)"
    desc = exc.get("description") or _remote_object_text(exc) if exc else ""
    first = desc.splitlines()[0] if desc else ""
    text = f"{prefix} {first}".strip()
    url = details.get("url")
    if url:
        line = details.get("lineNumber", 0) + 1
        col = details.get("columnNumber", 0) + 1
        text += f" ({url}:{line}:{col})"
    return text


def _collect(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    messages: list[str] = []
    for ev in events:
        method, params = ev.get("method"), ev.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(_exception_text(params.get("exceptionDetails", {})))
        elif method == "Runtime.consoleAPICalled":
            kind = params.get("type", "log")
            text = " ".join(_remote_object_text(a) for a in params.get("args", []))
            messages.append(f"{kind}: {text}")
            if kind in ("error", "assert"):
                errors.append(f"console.{kind}: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                text = entry.get("text", "")
                if entry.get("url"):
                    text += f" ({entry['url']})"
                errors.append(f"{entry.get('source', 'browser')}: {text}")
    return list(dict.fromkeys(errors)), messages  # keep order, drop exact duplicates


def render_html(
    path: str | os.PathLike[str],
    screenshot_png: str | os.PathLike[str] | None = None,
    *,
    width: int = 1200,
    height: int = 900,
    timeout: float = 60.0,
    settle: float = 0.3,
    full_page: bool = False,
) -> BrowserResult:
    """Load ``path`` (a local HTML file, or any URL) in headless Chromium.

    Waits for the ``load`` event plus ``settle`` seconds (late errors from timers and
    promises), serializes the DOM and, if ``screenshot_png`` is given, writes a PNG of the
    ``width`` x ``height`` viewport (the whole page with ``full_page=True``).
    Raises BrowserNotFound / BrowserError if the browser cannot be run.
    """
    target = str(path)
    if "://" not in target:
        p = Path(target).resolve()
        if not p.is_file():
            raise FileNotFoundError(p)
        target = p.as_uri()
    exe = find_chromium()
    deadline = time.monotonic() + timeout

    with tempfile.TemporaryDirectory(
        prefix="esm-tcav-chromium-", ignore_cleanup_errors=True
    ) as tmp:
        log_path = Path(tmp) / "chromium-stderr.log"
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        try:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        _TRAMPOLINE,
                        str(to_chrome_r),
                        str(from_chrome_w),
                        exe,
                        *_FLAGS,
                        f"--user-data-dir={tmp}/profile",
                        f"--window-size={width},{height}",
                        "about:blank",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(to_chrome_r, from_chrome_w),
                    start_new_session=True,
                )
        finally:
            os.close(to_chrome_r)
            os.close(from_chrome_w)
        cdp = _Cdp(to_chrome_w, from_chrome_r, proc)
        try:
            tid = cdp.call("Target.createTarget", {"url": "about:blank"}, deadline=deadline)
            sess = cdp.call(
                "Target.attachToTarget",
                {"targetId": tid["targetId"], "flatten": True},
                deadline=deadline,
            )["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                cdp.call(f"{domain}.enable", session=sess, deadline=deadline)
            cdp.call(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                session=sess,
                deadline=deadline,
            )
            cdp.events.clear()
            nav = cdp.call("Page.navigate", {"url": target}, session=sess, deadline=deadline)
            if nav.get("errorText"):
                raise BrowserError(f"navigation to {target} failed: {nav['errorText']}")
            cdp.wait_event("Page.loadEventFired", deadline=deadline)
            cdp.drain(max(0.0, min(settle, deadline - time.monotonic())))

            def evaluate(expr: str) -> str:
                res = cdp.call(
                    "Runtime.evaluate",
                    {"expression": expr, "returnByValue": True},
                    session=sess,
                    deadline=deadline,
                )
                return str(res.get("result", {}).get("value", ""))

            dom = evaluate(_DOM_JS)
            title = evaluate("document.title")
            shot_path: Path | None = None
            if screenshot_png is not None:
                shot = cdp.call(
                    "Page.captureScreenshot",
                    {"format": "png", "captureBeyondViewport": full_page},
                    session=sess,
                    deadline=deadline,
                )
                shot_path = Path(screenshot_png)
                shot_path.parent.mkdir(parents=True, exist_ok=True)
                shot_path.write_bytes(base64.b64decode(shot["data"]))
            errors, messages = _collect(cdp.events)
            try:
                cdp.send("Browser.close")
            except OSError:
                pass
        except (BrowserError, TimeoutError) as exc:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise BrowserError(f"{exc}\n--- chromium stderr (tail) ---\n{tail}") from exc
        finally:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: browser + helpers
                proc.wait(timeout=10)
            _wait_group_gone(proc.pid, 5.0)
            os.close(to_chrome_w)
            os.close(from_chrome_r)
    return BrowserResult(
        dom=dom,
        console_errors=errors,
        console_messages=messages,
        screenshot=shot_path,
        title=title,
    )


def _live_members(pgid: int) -> list[int]:
    """Pids in process group ``pgid`` that are not zombies (Linux /proc)."""
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry))
    return live


def _wait_group_gone(pgid: int, seconds: float) -> None:
    """Give the browser's helper processes (its own session/group) time to exit.

    Exited helpers may linger as zombies until the reaper collects them; those are ignored.
    """
    end = time.monotonic() + seconds
    while _live_members(pgid):
        if time.monotonic() > end:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            return
        time.sleep(0.05)
