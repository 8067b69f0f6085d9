"""Per-character features: what each detector says about hand-made texts, and agreement with the synthetic corpus.

Binary cases are drawn as a text with a marker line under it: ``^`` where the feature is on, a blank where
it is off. In those texts ``↵`` stands for a newline and ``→`` for a tab, so that the marker line stays aligned.
"""

from __future__ import annotations

import numpy as np
import pytest

from charrnn import synthetic
from charrnn.features import BUILTIN_NAMES, Feature, builtin_features, parse_feature_spec, regex_feature


def values(name: str, text: str) -> np.ndarray:
    (feature,) = [f for f in builtin_features(text) if f.name == name]
    assert feature.values.shape == (len(text),)
    return feature.values


def drawn(name: str, text: str) -> str:
    """Where binary feature `name` is on in `text` (with ↵ for a newline and → for a tab), as a marker line."""
    on = values(name, text.replace("↵", "\n").replace("→", "\t"))
    assert on.dtype == bool
    return "".join("^" if v else " " for v in on).rstrip()


def cases(*pairs: tuple[str, str]):
    return pytest.mark.parametrize("text, marks", pairs, ids=[text for text, _ in pairs])


# ---------------------------------------------------------------------------------------------------------
# The set of features


def test_builtin_features_names_kinds_and_dtypes():
    text = 'A "quote" (x) # c\n'
    features = builtin_features(text)
    assert [f.name for f in features] == list(BUILTIN_NAMES) == [
        "in_double_quotes", "in_single_quotes", "in_comment", "in_string", "word_start", "uppercase", "digit",
        "whitespace", "sentence_end", "paren_depth", "square_depth", "curly_depth", "bracket_depth", "column",
        "indentation",
    ]
    for f in features:
        assert f.kind == ("binary" if f.values.dtype == bool else "count")
        assert f.values.dtype in (np.bool_, np.int32) and f.values.shape == (len(text),)
        assert f.description and "\n" not in f.description
    assert [f.name for f in features if f.kind == "count"] == [
        "paren_depth", "square_depth", "curly_depth", "bracket_depth", "column", "indentation"]


def test_empty_text_gives_empty_features():
    assert all(f.values.shape == (0,) for f in builtin_features(""))


def test_feature_checks_kind_and_shape():
    with pytest.raises(ValueError, match="kind"):
        Feature("x", "real", np.zeros(3), "")
    with pytest.raises(ValueError, match="one-dimensional"):
        Feature("x", "count", np.zeros((3, 2), np.int32), "")


# ---------------------------------------------------------------------------------------------------------
# Quotes in prose


@cases(
    ('He said "hi" and left.',
     '        ^^^'),
    ('''"a 'b' c" d''',  # the single quotes nest inside
     '''^^^^^^^^'''),
    ('''"It's Bob's," she said.''',  # apostrophes do not disturb
     '''^^^^^^^^^^^^'''),
    (r'x = "say \"hi\"" + y',  # escaped quotes do not toggle
     r'    ^^^^^^^^^^^'),
    (r'"a\\" b "c"',  # an even run of backslashes escapes nothing
     r'^^^^    ^^'),
    ('“Hi,” she said, “and—”',  # typographic quotes open and close
     '^^^^            ^^^^^'),
    ('” “a “b” c',  # a stray ” stays outside, a second “ stays inside
     '  ^^^^^'),
    ('"One↵two." Three',  # a single newline does not end a quote
     '^^^^^^^^^'),
    ('"First part.↵↵"Second part," he said.',  # a new paragraph opens a new quote
     '^^^^^^^^^^^^^ ^^^^^^^^^^^^^'),
    ('"a↵ →↵b"c',  # a blank line may hold blanks; from its second newline on, b is outside and " opens
     '^^^^^  ^^'),
    ('"open to the end',
     '^^^^^^^^^^^^^^^^'),
)
def test_in_double_quotes(text, marks):
    assert drawn("in_double_quotes", text) == marks


@cases(
    ("She wrote 'never again' and left.",
     "          ^^^^^^^^^^^^"),
    ("I don't know, it's Anaïs's.",  # apostrophes inside words never open or close
     ""),
    ("The dogs' bowls were 'full'.",  # a closing-looking ' with nothing open is ignored
     "                     ^^^^^"),
    ("'Don't go,' he said.",  # an apostrophe inside a span does not close it
     "^^^^^^^^^^"),
    ("He said ‘stop’ and it’s over",
     "        ^^^^^"),
    ("‘a.‘-b’ c",  # ‘ only opens and ’ only closes
     "^^^^^^"),
    ('''"Say 'it isn't yours' now"''',
     '''     ^^^^^^^^^^^^^^^'''),
    ("'a' 'b'",
     "^^  ^^"),
    ("x ' y",  # a ' before whitespace opens nothing
     ""),
    ("'quote on↵↵and on'",  # a blank line ends it
     "^^^^^^^^^^"),
)
def test_in_single_quotes(text, marks):
    assert drawn("in_single_quotes", text) == marks


# ---------------------------------------------------------------------------------------------------------
# Comments and strings in code


@cases(
    ("a = 1; /* two↵lines */ b",  # the / of /* is still outside, the / of */ is outside again
     "        ^^^^^^^^^^^^^"),
    ("x++; // note↵y",  # the newline ending a line comment is outside
     "      ^^^^^^"),
    ("#include <stdio.h>↵# a comment↵  #  define X 1↵#if A # not a comment↵#includes",
     "                   ^^^^^^^^^^^                                       ^^^^^^^^^"),
    ('''x = 1  # note↵y = '#' + "//"  # real''',  # comment markers inside strings are not comments
     '''       ^^^^^^                 ^^^^^^'''),
    ('''/* don't "x ↵*/ s = 'a' + 1''',  # quotes inside comments start no string
     ''' ^^^^^^^^^^^^^'''),
    ("a # include b",  # a directive's # must be the first non-blank character of its line
     "  ^^^^^^^^^^^"),
    ("/*/ still */",  # /*/ does not close the comment it opens
     " ^^^^^^^^^^"),
    ("/* never closed↵more",
     " ^^^^^^^^^^^^^^^^^^^"),
    ("a / b * c // d",
     "           ^^^"),
)
def test_in_comment(text, marks):
    assert drawn("in_comment", text) == marks


@cases(
    (r'x = "say \"hi\"";',  # backslash escapes; the closing quote is outside
     r'    ^^^^^^^^^^^'),
    (r"c = '\'' + 'a\\' + z",
     r"    ^^^    ^^^^"),
    ('s = "open↵t = 1',  # an unterminated one-quote string ends before the newline
     "    ^^^^^"),
    ('"""doc "quoted"↵still "" here↵""" + x',  # triple quotes span lines; the last " closes
     '^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^'),
    ("""'''a "" b↵''' c""",
     """^^^^^^^^^^^^"""),
    ("It's Bob's 'book' now",  # a ' after a letter or digit is an apostrophe
     "           ^^^^^"),
    (r"r'\d' b'x' f'{a}' 1'000",  # but a Python string prefix is not
     r" ^^^   ^^   ^^^^"),
    ('p = "a # b // c" # d "e"',  # comment markers in a string, a quote in a comment
     "    ^^^^^^^^^^^"),
    (r's = "line \↵more" + 1',  # a backslash before a newline continues the string
     r'    ^^^^^^^^^^^^'),
)
def test_in_string(text, marks):
    assert drawn("in_string", text) == marks


# ---------------------------------------------------------------------------------------------------------
# Character classes and sentence ends


@cases(
    ("Hi there_x 42nd, é東 a-b (c)",
     "^  ^       ^     ^  ^ ^  ^"),
)
def test_word_start(text, marks):
    assert drawn("word_start", text) == marks


def test_character_classes_are_per_character_even_beyond_ascii():
    text = "Éa1٣ \t\u00a0東😀Z\n"
    assert drawn("uppercase", text) == "^        ^"
    assert drawn("digit", text) == "  ^^"
    assert drawn("whitespace", text) == "    ^^^   ^"


@cases(
    ("Wait... What?! Yes.",  # only the last of a run of marks counts
     "      ^      ^    ^"),
    ('''"Go." (Yes.) [No!] 'So?' “Hm…” ’Ok.’''',
     '''   ^      ^     ^     ^     ^     ^'''),
    ("Pi is 3.14, e.g. here.↵Next",
     "               ^     ^"),
    ("Mr.Smith ends…",
     "             ^"),
)
def test_sentence_end(text, marks):
    assert drawn("sentence_end", text) == marks


# ---------------------------------------------------------------------------------------------------------
# Counts


def test_bracket_depths_count_what_is_open_and_ignore_stray_closers():
    text = ")(a[b{c}]d))x("
    assert values("paren_depth", text).tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1]
    assert values("square_depth", text).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert values("curly_depth", text).tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert values("bracket_depth", text).tolist() == [0, 1, 1, 2, 2, 3, 3, 2, 1, 1, 0, 0, 0, 1]
    assert values("square_depth", "]]][").tolist() == [0, 0, 0, 1]


def test_column():
    assert values("column", "ab\ncd").tolist() == [1, 2, 0, 1, 2]
    assert values("column", "\n\nx").tolist() == [0, 0, 1]
    assert values("column", "a\r\nb\rc").tolist() == [1, 2, 0, 1, 2, 3]  # \r is an ordinary character
    assert values("column", "é東😀\nx").tolist() == [1, 2, 3, 0, 1]  # positions are characters
    assert values("column", "ab\ncd").dtype == np.int32


def test_indentation():
    assert values("indentation", "  ab\nx\n").tolist() == [1, 2, 2, 2, 0, 0, 0]
    assert values("indentation", "\tx \n").tolist() == [8, 8, 8, 0]  # blanks after the first word do not count
    assert values("indentation", "  \t y\n").tolist() == [1, 2, 8, 9, 9, 0]  # a tab moves to the next stop of 8
    assert values("indentation", "   \n  \n").tolist() == [1, 2, 3, 0, 1, 2, 0]  # blank lines too
    assert values("indentation", "a\n    if x:  # y\n").tolist() == [0, 0, 1, 2, 3, 4] + [4] * 10 + [0]


# ---------------------------------------------------------------------------------------------------------
# Agreement with the synthetic corpus's ground truth


def test_agrees_with_the_synthetic_ground_truth():
    corpus = synthetic.generate(num_chars=30_000)
    features = {f.name: f for f in builtin_features(corpus.text)}
    assert corpus.in_single_quotes.any() and corpus.bracket_depth.max() >= 3  # the sample has something to find
    for name in synthetic.TRUTH_FIELDS:
        got, want = features[name].values, getattr(corpus, name)
        wrong = np.flatnonzero(got != want)
        context = corpus.text[max(0, wrong[0] - 30):wrong[0] + 10] if len(wrong) else ""
        assert not len(wrong), f"{name} disagrees at {len(wrong)} positions, first after {context!r}"
        assert got.dtype == (bool if features[name].kind == "binary" else np.int32)


# ---------------------------------------------------------------------------------------------------------
# Regular-expression features and --feature specs


def test_regex_feature_marks_every_character_of_every_match():
    text = "# a\nb # c\n#d"
    feature = regex_feature("hash_line", r"^#.*", text)  # multiline: ^ is at every line start
    assert (feature.name, feature.kind) == ("hash_line", "binary")
    assert "".join("^" if v else " " for v in feature.values) == "^^^       ^^"
    assert regex_feature("aa", "aa", "aaa").values.tolist() == [True, True, False]  # matches do not overlap


def test_regex_feature_zero_width_and_missing_matches_mark_nothing():
    for pattern in (r"\b", "(?=a)", "x*", "zzz"):
        feature = regex_feature("f", pattern, "a ba")
        assert feature.values.dtype == bool and feature.values.tolist() == [False] * 4
    assert regex_feature("f", "a(?=b)", "ab a").values.tolist() == [True, False, False, False]


def test_regex_feature_rejects_a_bad_pattern():
    with pytest.raises(ValueError, match="unterminated"):
        regex_feature("x", "(", "abc")


def test_parse_feature_spec():
    assert parse_feature_spec("vowel=[aeiou]") == ("vowel", "[aeiou]")
    assert parse_feature_spec(" eq =a=b ") == ("eq", "a=b ")  # split at the first =; the regex is kept as is


@pytest.mark.parametrize("spec, message", [
    ("x=(", "--feature 'x=(': missing ), unterminated subpattern at position 0"),
    ("vowels", "--feature 'vowels': expected NAME=REGEX"),
    ("=a", "--feature '=a': the name before '=' is empty"),
    (" =a", "the name before '=' is empty"),
    ("x=", "--feature 'x=': the regular expression after '=' is empty"),
    ("column=a", "'column' is already a built-in feature"),
])
def test_parse_feature_spec_errors(spec, message):
    with pytest.raises(ValueError) as excinfo:
        parse_feature_spec(spec)
    assert message in str(excinfo.value)
