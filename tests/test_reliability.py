from tests.reliability import OUTPUT, render


def test_reliability_md_is_written_from_the_current_tests():
    assert OUTPUT.read_text() == render(), "RELIABILITY.md is out of date: run `python -m tests.reliability`"
