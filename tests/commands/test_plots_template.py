"""`dvc plots show` with the generated template must render its Vega charts in a browser that has no network."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

from chromium import CHROMIUM, chromium_dom

from mnistpipe.commands import plots_template

DVC_YAML = """\
plots:
  - loss.tsv:
      x: step
      y: loss
  - confusion.json:
      template: confusion
      x: actual
      y: predicted
  - sample.png
"""

# Appended to a copy of the page: once loaded, measure what each chart drew and whether each <img> decoded, then
# leave the result in the DOM for --dump-dom. Vega-Embed 7 renders SVG (count the data-mark shapes with an area);
# older ones render to a canvas (count its coloured pixels in hundreds: data marks are coloured, axes grey).
PROBE = """<script>
(function () {
  const ids = IDS, stop = Date.now() + 4000;
  function drawn(el) {
    if (!el) return -1;
    if (el.tagName === "svg") {
      return [...el.querySelectorAll(".role-mark > *")].filter((m) => {
        const box = m.getBBox();
        return box.width + box.height > 0;
      }).length;
    }
    const d = el.getContext("2d").getImageData(0, 0, el.width, el.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 40) n++;
    }
    return Math.floor(n / 100);
  }
  function probe() {
    const charts = {};
    for (const id of ids) charts[id] = drawn(document.querySelector("#" + id + " svg.marks, #" + id + " canvas"));
    if (Object.values(charts).every((n) => n > 0) || Date.now() > stop) {
      const out = document.createElement("pre");
      out.id = "probe";
      out.textContent = JSON.stringify({charts, images: [...document.images].map((i) => i.naturalWidth)});
      document.body.appendChild(out);
    } else {
      setTimeout(probe, 100);
    }
  }
  window.addEventListener("load", probe);
})();
</script>
"""


def run(*cmd: str, cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(cmd[-3:])} failed:\n{done.stdout}{done.stderr}"


def dvc(*args: str, cwd: Path) -> None:
    run(sys.executable, "-m", "dvc", *args, cwd=cwd)


def render_offline(page: Path, tmp_path: Path) -> dict:
    """Load `page` (plus PROBE) in headless Chromium with every network request refused; return PROBE's result."""
    text = page.read_text(encoding="utf-8")
    ids = re.findall(r"vegaEmbed\('#([\w-]+)'", text)
    probed = page.with_name("probed.html")  # same folder, so the page's relative static/ links still resolve
    head, body_end, tail = text.rpartition("</body>")  # the last one: the inlined bundle has "</body>" strings
    probed.write_text(head + PROBE.replace("IDS", json.dumps(ids)) + body_end + tail, encoding="utf-8")
    dom = chromium_dom(probed, tmp_path)
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not report; page DOM starts with: {dom[:500]!r}"
    result = json.loads(html.unescape(found.group(1)))
    assert len(result["charts"]) == 2, f"expected 2 Vega divs (line + confusion) in {page}, got {result['charts']}"
    return result


def tiny_png(side: int = 8) -> bytes:
    """A grey `side` x `side` PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = zlib.compress((b"\0" + b"\x80" * side) * side)
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def test_plots_render_offline(tmp_path: Path, helpers) -> None:
    helpers.need(CHROMIUM, "no Chromium binary on PATH (Debian: apt-get install -y chromium)")
    helpers.need(shutil.which("git"), "git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    dvc("init", "-q", cwd=repo)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.6\n2\t0.4\n3\t0.3\n")
    pairs = [(0, 0)] * 5 + [(0, 1), (1, 1), (1, 1), (1, 2), (2, 2), (2, 2), (2, 0)]
    (repo / "confusion.json").write_text(json.dumps([{"actual": a, "predicted": p} for a, p in pairs]))
    (repo / "sample.png").write_bytes(tiny_png())

    # Control: DVC's default page needs its CDN, so with no network the charts must stay blank.
    dvc("plots", "show", "-o", "default_plots", cwd=repo)
    control = render_offline(repo / "default_plots" / "index.html", tmp_path)
    assert all(n <= 0 for n in control["charts"].values()), f"charts rendered without the CDN: {control}"

    # The documented setup: generate the template at the repo root, register it relative to .dvc/.
    assert plots_template.main([str(repo / "dvc_plots_template.html")]) == 0
    dvc("config", "plots.html_template", "../dvc_plots_template.html", cwd=repo)
    dvc("plots", "show", cwd=repo)
    page = repo / "dvc_plots" / "index.html"
    assert not re.search(r"<script[^>]*\ssrc=", page.read_text(encoding="utf-8")), "the page loads a remote script"
    result = render_offline(page, tmp_path)
    assert all(n > 0 for n in result["charts"].values()), f"a chart drew no data marks: {result}"
    assert result["images"] and all(w > 0 for w in result["images"]), f"the PNG plot did not load: {result}"
