"""HTML template for `dvc plots show` that renders with no network access.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so offline its charts stay blank. This
template inlines the bundle that vl-convert ships instead. Generate it with

    python -m mnistpipe.report_template dvc_plots_template.html

and point DVC at it with `dvc config plots.html_template ../dvc_plots_template.html` (DVC resolves a relative
`plots.html_template` against the `.dvc/` directory).
"""

from __future__ import annotations

import re
import sys

from .io import atomic_path

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


def main(argv: list[str] | None = None) -> int:
    """Write the template to the path given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mnistpipe.report_template <output.html>", file=sys.stderr)
        return 2
    text = build_template()
    # Not io.write_text: it uses the locale's encoding, and the bundle has non-ASCII text that DVC reads as UTF-8.
    with atomic_path(args[0]) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
