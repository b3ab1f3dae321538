"""HTML template for `dvc plots show` that renders with no network access.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline its charts stay blank. This
template inlines the bundle that vl-convert ships instead. `write_template` writes it; the command line is
`mnistpipe-plots-template` (`mnistpipe.commands.plots_template`).
"""

from __future__ import annotations

import os
import re

from .io import write_text

# DVC's plot divs call vegaEmbed() from classic inline scripts while the page is parsed, but a module script runs
# only after parsing: until the bundle has loaded, record the calls and hand back promises that settle on replay.
_STUB = """<script>
window.vegaEmbed = function () {
  var args = arguments;
  return new Promise(function (resolve, reject) {
    (window.vegaEmbed.queue = window.vegaEmbed.queue || []).push([args, resolve, reject]);
  });
};
</script>"""

# Runs inside the bundle, where vegaEmbed, vegaLite and vega are in scope: publish them, then replay the queue.
_SNIPPET = """
const queued = window.vegaEmbed.queue || [];
window.vega = vega;
window.vegaLite = vegaLite;
window.vegaEmbed = vegaEmbed;
for (const [args, resolve, reject] of queued) {
  vegaEmbed(...args).then(resolve, reject);
}
"""

# The page has no `scripts` placeholder on purpose: DVC would fill it with the CDN <script> tags.
_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC Plot</title>
<style>
  table { border-spacing: 15px; }
</style>
STUB
<script type="module">
BUNDLE
</script>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def build_template() -> str:
    """Return the page text: DVC's `{plot_divs}` / `{refresh_tag}` placeholders plus the inlined Vega bundle."""
    import vl_convert  # imported lazily: only this command needs it

    bundle = vl_convert.javascript_bundle(_SNIPPET)
    # DVC fills placeholders by plain text replacement and the bundle sits inside a <script> element, so any of
    # these strings in the bundle would corrupt the page.
    hazard = re.search(r"</script|<!--|\{(plot_divs|refresh_tag|scripts)\}", bundle, re.IGNORECASE)
    if hazard:
        raise ValueError(f"the vl-convert bundle contains {hazard.group(0)!r}; it cannot be inlined as is")
    return _PAGE.replace("STUB", _STUB).replace("BUNDLE", bundle)


def write_template(path: str | os.PathLike) -> None:
    """Write `build_template()`'s page to `path` as UTF-8 (how DVC reads it), atomically."""
    write_text(path, build_template())
