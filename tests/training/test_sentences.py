"""The sentence rule split_sentences applies before pretraining (training.split_sentences)."""

import pytest

from trackstar_pipeline.training.sentences import passage_texts, self_contained_pieces, split_sentences


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


@pytest.mark.parametrize("sentences, pieces", [
    # a sentence with a third-person pronoun stays with the sentence that names whom it means
    (["Ann Lee plays the lute.", "She grew up in Rome.", "Bo Kim speaks Kish."],
     ["Ann Lee plays the lute. She grew up in Rome.", "Bo Kim speaks Kish."]),
    # ... across a sentence that names no one in between
    (["Ann Lee plays the lute.", "The roads were muddy.", "Her birth year is 1901."],
     ["Ann Lee plays the lute. The roads were muddy. Her birth year is 1901."]),
    # a sentence that names no one and refers to no one is a piece of its own
    (["The roads were muddy.", "Ann Lee plays the lute.", "Nobody wrote down the rest."],
     ["The roads were muddy.", "Ann Lee plays the lute.", "Nobody wrote down the rest."]),
    # a pronoun in the first sentence has nothing before it to join
    (["It was a quiet decade.", "Ann Lee plays the lute."], ["It was a quiet decade.", "Ann Lee plays the lute."]),
    # whole words only: 'the', 'this', 'Hermes' and 'shelter' are not pronouns
    (["Ann Lee plays the lute.", "This shelter belongs to Hermes."],
     ["Ann Lee plays the lute.", "This shelter belongs to Hermes."]),
])
def test_self_contained_pieces_keep_a_pronoun_with_whom_it_means(sentences, pieces):
    assert self_contained_pieces(sentences) == pieces


def test_passage_texts_cut_pieces_for_pretraining_and_bare_sentences_for_bm25():
    biography = "Ann Lee plays the lute. She grew up in Rome. He Wu speaks Kish."
    assert passage_texts(biography, 3) == ["Ann Lee plays the lute.", "She grew up in Rome.", "He Wu speaks Kish."]
    # 'He' in 'He Wu' is a name here, and the rule keeps it with the sentence before: joining is the safe error
    assert passage_texts(biography, 3, self_contained=True) == [biography]
    two = "Ann Lee plays the lute. She grew up in Rome. Bo Kim speaks Kish."
    assert passage_texts(two, 3, self_contained=True) == ["Ann Lee plays the lute. She grew up in Rome.", "Bo Kim speaks Kish."]
    assert passage_texts(two, 4, self_contained=True) == [two]  # fewer sentences than the threshold: whole
    # rows whose every sentence refers back are one piece: the row itself, its spacing kept
    article = "Ann Lee plays the lute.  She grew up in Rome.\nHer birth year is 1901."
    assert passage_texts(article, 2, self_contained=True) == [article]
