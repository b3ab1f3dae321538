"""`mnistpipe-plots-template`: write the HTML template for `dvc plots show` that renders with no network access.

    mnistpipe-plots-template dvc_plots_template.html

then point DVC at it with `dvc config plots.html_template ../dvc_plots_template.html` (DVC resolves a relative
`plots.html_template` against the `.dvc/` directory). The page itself comes from `mnistpipe.plots_template`.
"""

from __future__ import annotations

import argparse

from ..plots_template import write_template
from ..runner import run_stage


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of `mnistpipe-plots-template`."""
    ap = argparse.ArgumentParser(prog="mnistpipe-plots-template", description=__doc__.split("\n\n")[0])
    ap.add_argument("output", help="where to write the template (e.g. dvc_plots_template.html)")
    ap.add_argument("--traceback", action="store_true", help="show the traceback of a user error")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Write the template to the path given on the command line."""
    write_template(parse_args(argv).output)
    return 0


def cli() -> None:
    """Console-script entry point: user errors become one `error:` line and exit status 2."""
    run_stage(main)


if __name__ == "__main__":
    cli()
