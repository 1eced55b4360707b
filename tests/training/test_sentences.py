"""The sentence rule split_sentences applies before pretraining (training.split_sentences)."""

import pytest

from trackstar_pipeline.training.sentences import names_someone, passage_texts, self_contained_pieces, split_sentences


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
    # a sentence with a third-person pronoun is trained after the sentence that names whom it means
    (["Ann Lee plays the lute.", "She grew up in Rome.", "Bo Kim speaks Kish."],
     ["Ann Lee plays the lute.", "Ann Lee plays the lute. She grew up in Rome.", "Bo Kim speaks Kish."]),
    # ... past a sentence that names no one and one that refers back itself
    (["Ann Lee plays the lute.", "The roads were muddy.", "In 1900 she moved to Oslo.", "Her birth year is 1881."],
     ["Ann Lee plays the lute.", "The roads were muddy.", "Ann Lee plays the lute. In 1900 she moved to Oslo.",
      "Ann Lee plays the lute. Her birth year is 1881."]),
    # a later name joins the row's first: an aside about a place keeps the person, a page of records gets the
    # nearest name; a one-word name at the start counts
    (["Ann Lee grew up in Oslo.", "Oslo lies by a river.", "She plays the lute."],
     ["Ann Lee grew up in Oslo.", "Oslo lies by a river.", "Ann Lee grew up in Oslo. Oslo lies by a river. She plays "
      "the lute."]),
    (["Ann Lee plays the lute.", "Bo Kim speaks Kish.", "Cy Ng sings.", "He grew up in Rome."],
     ["Ann Lee plays the lute.", "Bo Kim speaks Kish.", "Cy Ng sings.",
      "Ann Lee plays the lute. Cy Ng sings. He grew up in Rome."]),
    (["Many letters survive.", "Bob sings.", "Many letters survive.", "He grew up in Rome."],
     ["Many letters survive.", "Bob sings.", "Many letters survive.", "Bob sings. He grew up in Rome."]),
    # the same sentence twice is one anchor
    (["Bob sings.", "Bob sings.", "He grew up in Rome."], ["Bob sings.", "Bob sings.", "Bob sings. He grew up in Rome."]),
    # a pronoun with no anchor before it stays as it is
    (["It was a quiet decade.", "Ann Lee plays the lute."], ["It was a quiet decade.", "Ann Lee plays the lute."]),
    # whole words only: 'the', 'this', 'Hermes' and 'shelter' are not pronouns
    (["Ann Lee plays the lute.", "This shelter belongs to Hermes."],
     ["Ann Lee plays the lute.", "This shelter belongs to Hermes."]),
])
def test_self_contained_pieces_train_a_pronoun_after_whom_it_means(sentences, pieces):
    assert self_contained_pieces(sentences) == pieces


@pytest.mark.parametrize("sentence, names", [
    ("Ann Lee plays the lute.", True), ("Bob sings.", True), ("The birth year of her is 1881.", True),
    ("The roads were muddy after the rains.", False), ("Many letters from that time survive.", False),
    ("In winter, few came.", False), ('"Nobody wrote it down."', False),
])
def test_names_someone_counts_names_places_and_years_but_not_a_sentence_starter(sentence, names):
    assert names_someone(sentence) is names


def test_passage_texts_cut_a_row_of_enough_sentences_into_self_contained_pieces():
    row = "Ann Lee plays the lute. She grew up in Rome. Bo Kim speaks Kish."
    assert passage_texts(row, 3) == ["Ann Lee plays the lute.", "Ann Lee plays the lute. She grew up in Rome.",
                                     "Bo Kim speaks Kish."]
    assert passage_texts(row, 4) == [row]  # fewer sentences than the threshold: whole
    assert passage_texts("Ann Lee plays the lute.", 1) == ["Ann Lee plays the lute."]
