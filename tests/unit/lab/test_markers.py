"""mnistpipe.lab.markers: the one way the scripts find and replace a generated block between its markers."""

from __future__ import annotations

import pytest

from mnistpipe.errors import PipelineError
from mnistpipe.lab.markers import between, markers, replace_between


def test_replace_between_keeps_everything_outside_the_block():
    start, end = markers("t")
    assert (start, end) == ("<!-- t:start -->", "<!-- t:end -->")
    text = f"a\n{start}\nold\nlines\n{end}\nb\n"
    new = replace_between(text, "t", "\n| t |\n")
    assert new == f"a\n{start}\n| t |\n{end}\nb\n"
    assert between(new, "t") == "| t |"
    assert replace_between(new, "t", "| t |") == new, "replacing a block with its own text changes nothing"


@pytest.mark.parametrize("text", ["no markers", "<!-- t:end -->\n<!-- t:start -->",
                                  "<!-- t:start -->\n<!-- t:start -->\n<!-- t:end -->", "<!-- t:start --> only"])
def test_missing_misordered_or_repeated_markers_are_one_line_errors(text):
    with pytest.raises(PipelineError, match=r"^R\.md needs one <!-- t:start --> line and one <!-- t:end --> line"):
        replace_between(text, "t", "x", where="R.md")
    with pytest.raises(PipelineError, match="needs one"):
        between(text, "t")


def test_other_blocks_are_left_alone():
    text = "<!-- a:start -->\n1\n<!-- a:end -->\n<!-- b:start -->\n2\n<!-- b:end -->\n"
    assert replace_between(text, "b", "3") == text.replace("\n2\n", "\n3\n")
