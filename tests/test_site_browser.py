"""The leaderboard in a real browser: headless Chromium opens the site from ``file://``, sorts and filters it.

Three ways in, all with the standard library: ``--dump-dom`` shows the DOM after the page's script ran (the
query string ``?sort=...`` / ``?norm=...`` drives it), the DevTools protocol over ``--remote-debugging-pipe``
clicks the headers, and ``--screenshot`` keeps a picture of each page in ``build/screenshots/`` (git-ignored).
Chromium is required: without it this test fails and says how to install it (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from site_data import Page, make_inputs

from robench.results.site import build_site

CHROMIUM = os.environ.get("ROBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parent.parent / "build" / "screenshots"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
ORDER = '[...document.querySelectorAll("#board tbody tr")].filter(r => !r.hidden).map(r => r.dataset.model + "/" + ' \
        "r.dataset.norm)"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not CHROMIUM:
        pytest.fail("the leaderboard's browser test needs Chromium and found none: install Debian's package "
                    "(apt-get install -y chromium) or set ROBENCH_CHROMIUM to the browser's path")
    root = tmp_path_factory.mktemp("site")
    results, zoo, adv = make_inputs(root)
    return build_site(results, zoo, root / "site", [adv])


def chromium(*args: str, timeout: float = 120) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                              timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def dom(url: str) -> Page:
    return Page(chromium("--dump-dom", url))


def _robust(page: Page) -> list[float | None]:
    return [float(r["cells"]["robust"]) if r["cells"]["robust"] else None for r in page.rows]


def test_sort_and_filter_from_the_query_string(site):
    url = site.index.as_uri()
    plain = dom(url)
    assert len(plain.rows) == 6 and all("hidden" not in r for r in plain.rows)
    up, down = dom(url + "?sort=robust"), dom(url + "?sort=-robust")
    assert _robust(up) == [20.0, 30.0, 40.0, 45.0, None, None]  # missing values last either way
    assert _robust(down) == [45.0, 40.0, 30.0, 20.0, None, None]
    assert 'data-sorted="robust"' in chromium("--dump-dom", url + "?sort=robust")
    linf = dom(url + "?norm=Linf&sort=model")
    shown = [r["data-model"] for r in linf.rows if "hidden" not in r]
    assert shown == ["m-a", "m-b", "m-b-s1", "m-c", "m-e"]  # the L2 row is hidden, the rest sorted by id


class DevTools:
    """A page driven through Chromium's DevTools protocol on ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self) -> None:
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        self.profile = tempfile.TemporaryDirectory()

        def fds() -> None:  # the pipe ends become fds 3 and 4 of the browser, inheritable
            a, b = os.dup(to_chrome), os.dup(from_chrome)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={self.profile.name}",
                                      "--remote-debugging-pipe", "about:blank"], preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf, self._id, self.session = b"", 0, None

    def call(self, method: str, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._write, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._read, 1 << 16)
                assert chunk, "Chromium closed the DevTools pipe"
                self._buf += chunk
            raw, _, self._buf = self._buf.partition(b"\0")
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                assert "error" not in reply, reply
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        end = time.monotonic() + 30
        while self.js("location.protocol + document.readyState") != "file:complete":  # not about:blank's
            assert time.monotonic() < end, f"{url} did not load"
            time.sleep(0.05)

    def js(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            os.close(self._write)
            os.close(self._read)
            self.profile.cleanup()


def test_clicking_headers_sorts_and_the_filter_menus_filter(site):
    tools = DevTools()
    try:
        tools.open(site.index.as_uri())
        assert tools.js("document.querySelectorAll('#board tbody tr').length") == 6
        ranked = ["m-a/L2", "m-b/Linf", "m-b-s1/Linf", "m-a/Linf", "m-e/Linf", "m-c/Linf"]
        assert tools.js(ORDER) == ranked
        tools.js("document.querySelector('th[data-key=\"robust\"]').click()")  # numbers: best first
        assert tools.js(ORDER) == ranked
        assert tools.js("document.querySelector('th[data-key=\"robust\"]').getAttribute('aria-sort')") == "descending"
        tools.js("document.querySelector('th[data-key=\"robust\"]').click()")
        assert tools.js(ORDER) == ["m-a/Linf", "m-b-s1/Linf", "m-b/Linf", "m-a/L2", "m-e/Linf", "m-c/Linf"]
        tools.js("document.querySelector('th[data-key=\"model\"]').click()")  # text: A to Z first
        assert tools.js(ORDER)[:3] == ["m-a/Linf", "m-a/L2", "m-b/Linf"]  # a stable sort keeps ties
        tools.js("const s = document.getElementById('f-norm'); s.value = 'L2'; s.dispatchEvent(new Event('change'))")
        assert tools.js(ORDER) == ["m-a/L2"]
        assert tools.js("document.getElementById('shown').textContent") == "1 of 6 entries shown"
        tools.open((site.out / "models" / "m-a.html").as_uri())
        assert tools.js("document.querySelectorAll('h3').length") == 3  # three cascade runs
        assert tools.js("document.querySelector('img.curves').naturalWidth") > 100  # the SVG loaded from file://
    finally:
        tools.close()


def test_screenshots_of_the_index_and_a_model_page(site):
    SHOTS.mkdir(parents=True, exist_ok=True)
    for name, url, size in (("index", site.index.as_uri(), "1400,900"),
                            ("model", (site.out / "models" / "m-a.html").as_uri(), "1200,1800")):
        shot = SHOTS / f"leaderboard-{name}.png"
        shot.unlink(missing_ok=True)
        chromium(f"--screenshot={shot}", f"--window-size={size}", url)
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
