"""Tests that cannot run fail under CI instead of skipping, and tests that need no network cut it themselves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

CONFTEST = Path(__file__).resolve().parent / "conftest.py"


class _RecordingProxy:
    """A TCP server on 127.0.0.1 that records the first line of every request and answers 502 Bad Gateway."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                self.lines.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def test_offline_env_sends_http_and_https_to_the_proxy(helpers):
    """helpers.offline_env routes urllib's http and https requests, the public mirrors' included, to the proxy;
    its default proxy port refuses connections."""
    from mnistpipe.data import SOURCES

    urls = [m.rstrip("/") + "/t10k-labels-idx1-ubyte.gz" for m in SOURCES["mnist"].mirrors]
    urls += ["http://example.com/mnist.gz", "https://example.com/mnist.gz"]  # both schemes, whatever the mirrors
    code = textwrap.dedent("""
        import sys, urllib.error, urllib.request
        for url in sys.argv[1:]:
            try:
                urllib.request.urlopen(url, timeout=10).close()
                print("reached", url)
            except (urllib.error.URLError, OSError) as exc:
                print("failed", url, exc)
    """)
    proxy = _RecordingProxy()
    try:
        env = {k: v for k, v in os.environ.items() if k.lower() not in ("all_proxy", "no_proxy")}
        done = subprocess.run([sys.executable, "-c", code, *urls], env={**env, **helpers.offline_env(proxy.port)},
                              capture_output=True, text=True, timeout=60)
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert "reached" not in done.stdout, done.stdout
    expected = []
    for url in urls:
        u = urlparse(url)
        expected.append(f"CONNECT {u.hostname}:{u.port or 443} " if u.scheme == "https" else f"GET {url} ")
    for want in expected:
        assert any(line.startswith(want) for line in proxy.lines), f"no {want!r} at the proxy: {proxy.lines}"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", helpers.closed_port()), timeout=5).close()


SKIPPING_TESTS = '''
import pytest
import mnistpipe_tests_conftest as helpers


def test_needs_a_widget():
    helpers.need(False, "no widget on this machine")


@pytest.mark.skipif(True, reason="marked away")
def test_marked_away():
    pass


def test_runs():
    pass


@pytest.mark.xfail(reason="known to break")
def test_excused():
    assert False
'''


def test_skips_fail_under_ci_only(tmp_path):
    """The same tests, run with the hooks of tests/conftest.py: skipped (or xfailed) locally, failed with the
    reason under CI (`need`, a skipif mark, a module-level skip and an xfail mark alike)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util
        import sys

        spec = importlib.util.spec_from_file_location("mnistpipe_tests_conftest", {str(CONFTEST)!r})
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        pytest_runtest_makereport = module.pytest_runtest_makereport
        pytest_make_collect_report = module.pytest_make_collect_report
    """))
    (tmp_path / "test_a.py").write_text(SKIPPING_TESTS)
    (tmp_path / "test_b.py").write_text('import pytest\n\npytest.skip("whole module away", allow_module_level=True)\n'
                                        '\n\ndef test_never():\n    pass\n')
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--continue-on-collection-errors",
           str(tmp_path)]
    local = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stdout[-3000:]
    assert "1 passed, 3 skipped, 1 xfailed" in local.stdout, local.stdout[-3000:]
    ci = subprocess.run(cmd, cwd=tmp_path, env={**env, "CI": "true"}, capture_output=True, text=True, timeout=120)
    assert ci.returncode == 1, ci.stdout[-3000:]
    assert "skipped" not in ci.stdout.splitlines()[-1], ci.stdout[-3000:]
    assert "2 failed, 1 passed, 2 errors" in ci.stdout, ci.stdout[-3000:]  # a skipif mark acts in setup
    for reason in ("no widget on this machine", "marked away", "whole module away", "xfail under CI"):
        assert reason in ci.stdout, f"{reason!r} not reported under CI:\n{ci.stdout[-3000:]}"
