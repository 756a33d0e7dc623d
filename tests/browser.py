"""A headless Chromium driven through the Chrome DevTools protocol, for tests of the HTML report.

No websocket and no Playwright: Chromium's `--remote-debugging-pipe` speaks the protocol as
NUL-terminated JSON messages on file descriptors 3 (commands in) and 4 (replies and events out).
`Browser.open(url)` makes a page and attaches to it; `page.eval(js)` runs JavaScript there and
returns the value. `find_chromium()` is None where no browser is installed (the test then skips).
"""
from __future__ import annotations
import json, os, shutil, subprocess, tempfile, time
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
  """The path of a Chromium or Chrome executable, from $CHROMIUM or PATH."""
  if (env := os.environ.get("CHROMIUM")) and os.path.exists(env): return env
  return next((p for name in CANDIDATES if (p := shutil.which(name))), None)


class Browser:
  """One headless browser process; use as a context manager."""

  def __init__(self, executable: str, timeout: float = 30.0):
    self.timeout = timeout
    self.profile = tempfile.mkdtemp(prefix="picograd-chromium-")
    to_browser_r, self._to_browser = os.pipe()
    self._from_browser, from_browser_w = os.pipe()

    def child_fds() -> None:  # the browser reads commands on fd 3 and writes replies on fd 4
      a, b = os.dup(to_browser_r), os.dup(from_browser_w)
      os.dup2(a, 3); os.dup2(b, 4)

    args = [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={self.profile}", "about:blank"]
    self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 preexec_fn=child_fds, close_fds=False)  # the dup2'd fds 3 and 4 must survive; others are close-on-exec
    os.close(to_browser_r); os.close(from_browser_w)
    self._next_id, self._buffer = 0, b""

  def __enter__(self) -> "Browser": return self

  def __exit__(self, *exc: object) -> None: self.close()

  def close(self) -> None:
    try:
      self.send("Browser.close")
    except (OSError, RuntimeError, TimeoutError):
      pass
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
    for fd in (self._to_browser, self._from_browser):
      try:
        os.close(fd)
      except OSError:
        pass
    shutil.rmtree(self.profile, ignore_errors=True)

  def _read_message(self, deadline: float) -> dict[str, Any]:
    while b"\0" not in self._buffer:
      if time.monotonic() > deadline: raise TimeoutError("no reply from the browser")
      chunk = os.read(self._from_browser, 1 << 16)
      if not chunk:
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        raise RuntimeError(f"the browser closed its pipe: {err[-2000:]}")
      self._buffer += chunk
    message, _, self._buffer = self._buffer.partition(b"\0")
    return json.loads(message)

  def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
    """Send one command and wait for its reply (events in between are dropped)."""
    self._next_id += 1
    msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
    if session: msg["sessionId"] = session
    os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
    deadline = time.monotonic() + self.timeout
    while True:
      reply = self._read_message(deadline)
      if reply.get("id") == self._next_id:
        if "error" in reply: raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

  def open(self, url: str) -> "Page":
    target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    page = Page(self, session)
    self.send("Page.navigate", {"url": url}, session)
    page.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")
    return page


class Page:
  def __init__(self, browser: Browser, session: str):
    self.browser, self.session = browser, session

  def eval(self, expression: str) -> Any:
    """Evaluate JavaScript in the page; its value (JSON-able), or RuntimeError with the page's exception."""
    result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, self.session)
    if "exceptionDetails" in result: raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
    return result["result"].get("value")

  def wait_for(self, condition: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not self.eval(f"!!({condition})"):
      if time.monotonic() > deadline: raise TimeoutError(f"the page never had {condition}")
      time.sleep(0.05)
