"""The one-line selection reason cuts a long candidate error at a word's end."""

from __future__ import annotations

from duh.compiler._selection import _ERROR_CHARS, _short


def test_a_long_error_is_cut_at_a_word_end_and_marked() -> None:
    error = (
        "onnxruntime's static quantizer failed on this model: ValueError: Unable to get valid "
        "quantization scale for input '/pair/backbone/blocks/blocks.0/Mul_3_output_0' when"
    )
    cut = _short(error + "\nsecond line")
    assert len(cut) <= _ERROR_CHARS and cut.endswith("…")
    assert error.startswith(cut[:-1]) and error[len(cut) - 1] == " "  # a whole word kept
    assert _short("short\nmore") == "short"
    assert len(_short("x" * 500)) == _ERROR_CHARS  # one long word: cut where it must be
