"""The report stage's report/index.html opened from disk in headless Chromium with no network: every section
heading is there, every figure decodes (naturalWidth > 0), and no request leaves the page (a recording proxy sees
none; the browser's resource timing lists only local files)."""

from __future__ import annotations

import html
import json
import re
import socket
import threading
from urllib.parse import urlsplit

from chromium import CHROMIUM, chromium_dom

from mnistpipe import study

PROBE = """<script>
window.addEventListener("load", function () {
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    headings: [...document.querySelectorAll("h1, h2")].map((h) => h.textContent),
    images: [...document.images].map((i) => [i.alt, i.naturalWidth, i.src.slice(0, 22)]),
    resources: performance.getEntriesByType("resource").map((r) => r.name),
  });
  document.body.appendChild(out);
});
</script>
"""


# The browser's own background services (clock, component updates, sign-in), which it calls whatever the page is;
# every other request the proxy records came from the page. The proxy forwards nothing, so none leaves the machine.
BROWSER_SERVICES = frozenset({"clients2.google.com", "accounts.google.com", "update.googleapis.com",
                              "redirector.gvt1.com"})


def host(request_line: str) -> str:
    """The host of an HTTP proxy request line (`GET http://host/... HTTP/1.1` or `CONNECT host:443 HTTP/1.1`)."""
    parts = request_line.split()
    if len(parts) < 2:
        return request_line
    target = parts[1] if "://" in parts[1] else "//" + parts[1]
    return urlsplit(target).hostname or target


def page_requests(requests: list[str]) -> list[str]:
    return [r for r in requests if host(r) not in BROWSER_SERVICES]


class RecordingProxy:
    """A local TCP listener that records the first line of every connection made to it (an HTTP proxy request)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.requests: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode("latin-1") or "(empty)")
                except OSError:
                    self.requests.append("(connection without a request)")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


def test_report_page_renders_offline(repo_copy, helpers, tmp_path):
    helpers.need(CHROMIUM, "no Chromium binary on PATH (Debian: apt-get install -y chromium)")
    rc, _, err = helpers.run_stage(repo_copy, "report")
    assert rc == 0, err[-3000:]
    page = repo_copy / "report" / "index.html"
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text), "the page links something remote"
    assert "<script" not in text and "url(" not in text
    probed = tmp_path / "probed.html"  # another folder: the page must not need anything beside it
    probed.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proxy = RecordingProxy()
    try:
        dom = chromium_dom(probed, tmp_path, proxy=proxy.url)
    finally:
        proxy.close()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not report; the DOM starts with {dom[:500]!r}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["headings"][1:] == list(study.SECTIONS), result["headings"]
    figures = [name for name in study.FIGURES if (repo_copy / "plots" / f"{name}.png").is_file()]
    assert len(result["images"]) == len(figures) >= 10, result["images"]
    assert all(width > 0 and src.startswith("data:image/png") for _, width, src in result["images"]), result["images"]
    assert [r for r in result["resources"] if not r.startswith(("file:", "data:"))] == [], result["resources"]
    assert page_requests(proxy.requests) == [], f"the page made requests: {proxy.requests}"


def test_the_recording_proxy_sees_a_page_that_reaches_out(tmp_path, helpers):
    """Control: a page with a remote image makes a request the proxy records (so an empty record means none)."""
    helpers.need(CHROMIUM, "no Chromium binary on PATH (Debian: apt-get install -y chromium)")
    page = tmp_path / "remote.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/x.png"></body></html>')
    proxy = RecordingProxy()
    try:
        chromium_dom(page, tmp_path, proxy=proxy.url)
    finally:
        proxy.close()
    assert [host(r) for r in page_requests(proxy.requests)] == ["example.invalid"], proxy.requests
