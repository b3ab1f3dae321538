"""`dvc plots show` works right after `dvc repro`: the offline page template is an output of the visualize stage, so
nobody has to write it by hand first (tests/commands/test_plots_template.py renders such a page in Chromium)."""

from __future__ import annotations

import re


def test_dvc_plots_show_after_repro_needs_no_extra_step(repo_copy, helpers):
    assert "dvc_plots_template.html" in helpers.stage_outputs(repo_copy, "visualize")
    template = (repo_copy / "dvc_plots_template.html").read_text(encoding="utf-8")
    assert "{plot_divs}" in template
    helpers.dvc(repo_copy, "plots", "show", check=True)
    page = (repo_copy / "dvc_plots" / "index.html").read_text(encoding="utf-8")
    assert "vegaEmbed" in page and not re.search(r"<script[^>]*\ssrc=", page), "the page loads a remote script"
