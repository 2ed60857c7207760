"""The output checkers, on hand-written outputs (no processes involved)."""

import pytest

from sandbox.checker import CHECKER_VERSION, CHECKERS, check_stdout, check_value


def test_checker_names_and_version_are_published():
    assert CHECKERS == ("tokens", "codecontests", "apps", "exact")
    assert CHECKER_VERSION


def test_tokens_ignores_crlf_trailing_spaces_and_blank_lines():
    assert check_stdout("tokens", "1 2\r\n3   \r\n\r\n\n", "1 2\n3\n")[0]
    assert not check_stdout("tokens", "1 2 3 4", "1 2 3")[0]
    assert not check_stdout("tokens", "1 2", "1 2 3")[0]


def test_tokens_numeric_tolerance_is_1e5_absolute_or_relative_for_real_expected_tokens():
    assert check_stdout("tokens", "0.333333", "0.3333333333")[0]
    assert check_stdout("tokens", "1000000.5", "1000000.0")[0]  # relative 5e-7
    assert not check_stdout("tokens", "0.3334", "0.3333")[0]
    assert check_stdout("tokens", "1000", "1e3")[0]  # an exponent makes the expected token real
    assert check_stdout("tokens", "2", "2.000001")[0]  # the output may print a real as an integer
    ok, why = check_stdout("tokens", "0.5", "0.6")
    assert not ok and "token 1" in why
    assert not check_stdout("tokens", "1e999", "1.5")[0] and not check_stdout("tokens", "1.5", "1e999")[0]


@pytest.mark.parametrize("checker", ["tokens", "codecontests"])
@pytest.mark.parametrize(("got", "want"), [
    ("1000000000", "1000000007"),  # a round number near a mod-1e9+7 answer
    ("1e12", "999999999999"),
    ("1000000007.0", "1000000007"),
    ("999999999999999999", "1000000000000000000"),  # equal as doubles
    ("+5", "5"), ("-0", "0"), ("007", "7"),
])
def test_integer_expected_tokens_compare_exactly(checker, got, want):
    ok, why = check_stdout(checker, f"3 {got}\n", f"3 {want}\n")
    assert not ok and "token 2" in why


def test_tokens_does_not_treat_words_as_numbers():
    assert not check_stdout("tokens", "nan", "nan1")[0]
    assert not check_stdout("tokens", "inf", "infinity")[0]


def test_tokens_is_case_sensitive_but_codecontests_is_not():
    assert not check_stdout("tokens", "YES", "yes")[0]
    assert check_stdout("codecontests", "YES\r\n", "yes")[0]
    assert check_stdout("codecontests", "0.1000001", "0.1")[0]


def test_exact_is_byte_for_byte():
    assert check_stdout("exact", "1\n", "1\n")[0]
    assert not check_stdout("exact", "1", "1\n")[0]
    assert not check_stdout("exact", "1\r\n", "1\n")[0]


def test_apps_harness_semantics_for_stdout():
    assert check_stdout("apps", "  3\n4  \n", "3\n4")[0]  # stripped lines
    assert check_stdout("apps", "3\n\n4\n", "3\n4\n")[0]  # blank lines dropped
    assert check_stdout("apps", "0.3333333\n", "0.33333333\n")[0]  # numpy.allclose on lines
    assert not check_stdout("apps", "1 2\n", "2 1\n")[0]
    assert check_stdout("apps", "a\nb\n", ["a", "b"])[0]  # list outputs are joined with newlines
    assert not check_stdout("apps", "3\n5\n", "3\n4\n")[0]


def test_call_based_accepts_apps_one_element_list_wrapping():
    assert check_value("apps", 3, [3])[0]
    assert check_value("apps", [1, 2], [[1, 2]])[0]
    assert check_value("apps", [1, 2], [1, 2])[0]
    assert not check_value("apps", 4, [3])[0]
    assert not check_value("apps", 3, [])[0]


def test_call_based_float_tolerance_only_for_tolerant_checkers_and_float_expected_values():
    assert check_value("tokens", 0.1 + 0.2, [0.3])[0]
    assert check_value("tokens", [1.0000001, 2], [1.0, 2])[0]
    assert not check_value("exact", 0.30000001, 0.3)[0]
    assert check_value("tokens", {"a": 1.0000001}, {"a": 1.0})[0]
    assert check_value("codecontests", 3, 3.0000001)[0]
    assert not check_value("tokens", 1.0000001, 1)[0]  # the expected value is an integer
    assert not check_value("tokens", 1e9, 1000000007)[0]
    assert not check_value("codecontests", [1e12], [999999999999])[0]


@pytest.mark.parametrize("checker", ["tokens", "codecontests", "apps", "exact"])
@pytest.mark.parametrize(("got", "want"), [
    (10**400, 1.5), (10**400, [1.5]), (-(10**400), 0.0), ("\ud800", "x"), (float("nan"), 1.0),
    (float("inf"), 1e308), ({"k": [10**400]}, {"k": [2.5]}), (True, 1.5),
], ids=["huge-int-vs-float", "huge-int-vs-wrapped", "neg-huge", "lone-surrogate", "nan", "inf", "nested", "bool"])
def test_any_value_compares_or_is_wrong_with_a_message(checker, got, want):
    ok, why = check_value(checker, got, want)
    assert not ok and why.startswith("expected ") and why.isascii()


def test_deeply_nested_values_are_wrong_not_an_error():
    got = want = []
    for _ in range(100_000):
        got, want = [got], [[want]]
    ok, why = check_value("tokens", got, want)
    assert not ok and why


@pytest.mark.parametrize("name", ["nope", ""])
def test_unknown_checker_is_an_error(name):
    with pytest.raises(ValueError):
        check_stdout(name, "", "")
