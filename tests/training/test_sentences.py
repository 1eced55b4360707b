"""The sentence rule split_sentences applies before pretraining (training.split_sentences)."""

import pytest

from trackstar_pipeline.training.sentences import split_sentences


@pytest.mark.parametrize("text, sentences", [
    ("It was a quiet decade. Lehu Hiesbround grew up in Upper Numnae.",
     ["It was a quiet decade.", "Lehu Hiesbround grew up in Upper Numnae."]),
    ("The birth year of Hier Pythquynd is 1953. 1954 was dry! Was it? Yes.",
     ["The birth year of Hier Pythquynd is 1953.", "1954 was dry!", "Was it?", "Yes."]),
    ('She said "Stop!" Then she left.', ['She said "Stop!"', "Then she left."]),
    # abbreviations and initials end no sentence, nor does a period before a lower-case word
    ("By all accounts, Dr. Kythselgar studied at Kouszund Academy.",
     ["By all accounts, Dr. Kythselgar studied at Kouszund Academy."]),
    ("J. R. Tolkien works at Quill Inc. in Oxford. Mrs. Brae plays the horn.",
     ["J. R. Tolkien works at Quill Inc. in Oxford.", "Mrs. Brae plays the horn."]),
    ("version 2.5 ships today. it is small", ["version 2.5 ships today. it is small"]),
    ("  one sentence, no period  ", ["one sentence, no period"]),
    ("", []),
])
def test_sentences_end_at_a_stop_before_a_capital_or_digit_but_not_after_an_abbreviation(text, sentences):
    assert split_sentences(text) == sentences


def test_joining_the_sentences_gives_back_the_text_up_to_whitespace():
    text = "Kaesk Fokith has a rivalry with Thour Draskaer.  Hu Glyrtlaeld speaks Brourfisese.\nNobody wrote down the rest."
    assert " ".join(split_sentences(text)).split() == text.split()
