"""Issue 12's lessons from blind cases, one behaviour per test: parts of a clause the rules leave
unexplained, numbers said in words, headings before a denial, past episodes and their limits."""

from __future__ import annotations

import pytest

from bot.clinical.knowledge import KnowledgeBase
from bot.nlu.extractor import ABSENT, NOT_PATIENT, PAST, PRESENT, Question, SymptomExtractor
from bot.nlu.vitals import VitalsParser, spelled_as_digits


def assertions(extractor: SymptomExtractor, text: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for m in extractor(text).mentions:
        found.setdefault(m.symptom, set()).add(m.assertion)
    return found


def test_the_words_a_phrase_leaves_over_are_read_by_meaning(extractor: SymptomExtractor) -> None:
    """The issue's own example, after a reading in the same clause."""
    findings = extractor("Fever 38.6 and now there is a sharp stabbing pain in the middle of my chest. CAR T day 5")
    assert {"fever", "chest_pain"} <= set(findings.present)
    chest = next(m for m in findings.mentions if m.symptom == "chest_pain")
    assert chest.source == "semantic" and "38.6" not in chest.evidence


def test_a_leftover_that_repeats_the_phrase_adds_nothing(extractor: SymptomExtractor) -> None:
    findings = extractor("I have had a terrible pounding headache since this morning that won't go away")
    assert set(findings.present) == {"headache"}


@pytest.mark.parametrize(
    ("said", "digits"),
    [
        ("one hundred and three point six", "103.6"),
        ("a hundred and two", "102"),
        ("thirty-nine point five", "39.5"),
        ("one oh three", "103"),
        ("thirty eight and a half", "38.5"),
        ("thirty-nine and seven", "39.7"),  # how some say 39.7
        ("thirty nine comma eight", "39.8"),
    ],
)
def test_numbers_said_in_words_become_digits_of_the_same_length(said: str, digits: str) -> None:
    text, spans = spelled_as_digits(f"temp {said} tonight")
    assert text.split()[1] == digits
    assert len(text) == len(f"temp {said} tonight") and spans == [(5, 5 + len(said))]


def test_small_numbers_in_words_are_left_alone() -> None:
    assert spelled_as_digits("one cough and two headaches") == ("one cough and two headaches", [])
    # "and" reads as a decimal point only in the body-temperature range
    assert spelled_as_digits("twenty and five of us")[0].split()[:3] == ["20", "and", "five"]


def test_a_temperature_in_words_is_a_reading_with_its_own_words_as_evidence(kb: KnowledgeBase) -> None:
    (reading,) = VitalsParser(kb).parse("temperature one hundred and three point six, had my kymriah cells on the 12th")
    assert (reading.kind, reading.value, reading.symptom) == ("temperature", 103.6, "high_fever")
    assert reading.text == "one hundred and three point six"


def test_a_heading_before_a_denial_does_not_swallow_it(extractor: SymptomExtractor) -> None:
    assert assertions(extractor, "all caps sorry: NO FEVER NO CHILLS FEELING GOOD") == {"fever": {ABSENT}, "chills": {ABSENT}}
    assert assertions(extractor, "fever: no, cough: yes") == {"fever": {ABSENT}, "cough": {PRESENT}}
    assert assertions(extractor, "bit of a hedache and no appetite")["headache"] == {PRESENT}


def test_no_denies_a_clause_that_reads_like_a_negative_description(extractor: SymptomExtractor) -> None:
    found = assertions(extractor, "no breathing issues, no chest pain, just a bad headache")
    assert PRESENT not in found.get("difficulty_breathing", set()) and found["headache"] == {PRESENT}


@pytest.mark.parametrize(
    "text",
    [
        "my husband had a seizure in 2015, well controlled since",
        "I passed out once years ago at a wedding",
        "my husband had a high fever and shaking chills on day 3 but that was 3 weeks ago and hes been fine since",
        "had a temp of 38.5 on tuesday but no fever since wednesday morning",
    ],
)
def test_an_episode_that_is_over_is_past(extractor: SymptomExtractor, text: str) -> None:
    assert not extractor(text).present


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("he had a seizure 2 weeks ago and another one just now", "seizure"),
        ("he's been confused since his infusion 2 weeks ago", "confusion"),
        ("THERMOMETER SAYS 104.2 I HAD TECARTUS LAST WEEK WHAT DO I DO", "high_fever"),
        ("my infusion was last week and I have a headache", "headache"),
    ],
)
def test_a_past_cue_does_not_close_an_episode_that_is_back_ongoing_or_dates_a_treatment(
    extractor: SymptomExtractor, text: str, symptom: str
) -> None:
    assert symptom in extractor(text).present


def test_a_reading_inside_a_question_is_still_a_reading(extractor: SymptomExtractor) -> None:
    assert "high_fever" in extractor("is 39.6 classed as high?? had opdivo yesterday").present
    assert "high_fever" not in extractor("what if my temperature goes up to 39.6?").present


def test_a_past_finding_keeps_its_cue_as_the_reason(extractor: SymptomExtractor) -> None:
    (seizure,) = [m for m in extractor("my husband had a seizure in 2015").mentions if m.symptom == "seizure"]
    assert seizure.assertion == PAST and seizure.cue == "in 2015"


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("my cat is throwing up lol, not me, I'm fine", "nausea"),
        ("my neighbour has a fever and a cough", "fever"),
        ("my friend from support group had a really high fever", "high_fever"),
    ],
)
def test_someone_who_is_not_the_patient_is_not_counted(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    findings = extractor(text)
    assert symptom not in findings.present
    assert NOT_PATIENT in {m.assertion for m in findings.mentions if m.symptom == symptom}


def test_a_relative_writing_for_the_patient_still_counts(extractor: SymptomExtractor) -> None:
    assert "confusion" in extractor("my husband is confused and doesn't know where he is").present


def test_a_hyphen_inside_a_word_does_not_cut_a_clause(extractor: SymptomExtractor) -> None:
    assert "confusion" not in extractor("my mum's legs are swollen like balloons. she had car-t last month").present


def test_where_a_finding_is_does_not_become_another_finding(extractor: SymptomExtractor) -> None:
    assert set(extractor("Opdivo 3 weeks. itchy red rash on my chest and arms since this morning").present) == {"rash"}


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("he's been wandering round the house looking for our old dog. the dog died in 2009", "confusion|hallucinations"),
        ("my lips and fingernails have gone a bluish grey colour", "skin_discoloration"),
        ("my husband keeps telling me there's music playing in the hallway. there is no music", "hallucinations"),
    ],
)
def test_words_that_looked_like_cues_are_not(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    """'looking for' is not 'what to look for'; 'gone blue' is not 'gone away'; 'there is no music' backs the scene.
    ("a|b": either reading of the scene is the emergency it is.)"""
    assert set(symptom.split("|")) & set(extractor(text).present)


@pytest.mark.parametrize(
    "text",
    [
        "The article says low blood pressure is an emergency. What number counts as low?",
        "I read that seizures and hallucinations can happen after CAR-T. How common is that?",
        "just wanted to ask what number counts as a high fever",
    ],
)
def test_reading_material_and_general_questions_are_not_reports(extractor: SymptomExtractor, text: str) -> None:
    assert not extractor(text).present


def test_a_climbing_temperature_is_worsening(extractor: SymptomExtractor) -> None:
    assert extractor("fever was 38.1 yesterday and 38.9 today, it keeps climbing").worsening


@pytest.mark.parametrize(
    "text",
    [
        "Had chills on day 3 after the infusion. They settled with paracetamol. Now day 8 and no chills.",
        "the headache from last weekend has gone, no headache now",
        "he was muddled for a day after his cells two weeks ago but he's sharp since and not confused at all now",
    ],
)
def test_an_episode_the_message_closes_is_over(extractor: SymptomExtractor, text: str) -> None:
    assert not extractor(text).present


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("his temperature hit 39.8 and settled after tylenol", "high_fever"),
        ("he had a fit. It settled after a minute.", "seizure"),
        ("he had a seizure, no seizure now but he is very sleepy", "seizure"),
        ("temp was 102 an hour ago so I took tylenol, now it reads 99. on blincyto", "fever"),
    ],
)
def test_an_undated_or_masked_episode_stays_present(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    assert symptom in extractor(text).present


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("my colleague's wife was seeing things after her CAR-T", "hallucinations"),
        ("someone in my online group had a seizure after Kymriah, is that common?", "seizure"),
        ("the man in the bed opposite had a fit last night, I'm fine", "seizure"),
    ],
)
def test_people_around_the_patient_are_not_the_patient(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    assert symptom not in extractor(text).present


@pytest.mark.parametrize(
    "text",
    ["it feels like someone is sitting on my chest", "a man was standing in the corner of the room, nobody else saw him"],
)
def test_a_simile_or_a_scene_is_not_someone_else(extractor: SymptomExtractor, text: str) -> None:
    assert NOT_PATIENT not in {m.assertion for m in extractor(text).mentions}


@pytest.mark.parametrize(
    ("text", "worse"),
    [
        ("if the rash gets worse I'll ring them", False),
        ("what if my cough gets worse?", False),
        ("my cough is much worse", True),
        ("the tablets aren't touching this headache", True),
        ("fever 38.2 this morning, 38.7 now, going up", True),
    ],
)
def test_worsening_is_said_of_the_patient_now(extractor: SymptomExtractor, text: str, worse: bool) -> None:
    assert bool(extractor(text).worsening) is worse


@pytest.mark.parametrize(
    "text",
    [
        "not on any cancer treatment or immunotherapy, just a cough",
        "I'm not on any of that immunotherapy stuff, just a cough",
        "nope, not on anything. bit of a cough",
    ],
)
def test_a_denial_reaches_every_therapy_it_lists(extractor: SymptomExtractor, text: str) -> None:
    assert extractor(text).on_immunotherapy is False


def test_a_reading_decides_what_it_measures(extractor: SymptomExtractor) -> None:
    findings = extractor("my watch says my resting pulse was 61 this morning, lower than usual, fine?")
    assert not {"rapid_heartbeat", "low_blood_pressure"} & set(findings.present)


def test_a_clause_that_says_as_usual_is_no_symptom_but_its_negation_is_read(extractor: SymptomExtractor) -> None:
    assert "hallucinations" not in extractor("he's talking away normally at dinner").present
    assert "speech_difficulty" in extractor("she is not talking normally, her words are jumbled").present


@pytest.mark.parametrize(
    ("text", "value"),
    [("pulse is hundred thirty", 130), ("heart rate one forty-two at rest", 142), ("his pressure is 84 systolic", 84)],
)
def test_readings_said_the_way_they_are_read_out(extractor: SymptomExtractor, text: str, value: int) -> None:
    assert value in [v.value for v in extractor(text).vitals]


def test_three_unsure_clauses_naming_one_emergency_count(extractor: SymptomExtractor) -> None:
    doc = extractor.nlp("one. two. three.")
    unsure = [Question("drowsiness", text, 0.47, 0, 3, False) for text in ("one", "two", "three")]
    assert [m.symptom for m in extractor._corroborated(doc, unsure, set(), 3)] == ["drowsiness"]
    assert extractor._corroborated(doc, unsure[:2], set(), 3) == []


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("my tummy isn't sore and her chest doesn't hurt", "chest_pain"),
        ("my heart skipped a beat when they said the scan was clear", "rapid_heartbeat"),
        ("sick and tired of waiting rooms", "malaise"),
        ("I fainted once when I was a teenager at a concert, does that matter?", "fainting"),
        ("the nurse said CAR-T can make you hallucinate", "hallucinations"),
    ],
)
def test_denied_complaints_idioms_and_old_or_general_stories_are_not_reports(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    assert symptom not in extractor(text).present


def test_a_negation_that_is_part_of_the_description_does_not_deny(extractor: SymptomExtractor) -> None:
    assert "speech_difficulty" in extractor("his speech is slow and the words are not clear, like he is drunk").present


def test_history_of_a_condition_does_not_deny_an_attack_now(extractor: SymptomExtractor) -> None:
    findings = extractor("he is shaking like epilepsy, he never had epilepsy before")
    assert "seizure" in findings.present and "seizure" not in findings.absent


@pytest.mark.parametrize(
    "text",
    [
        "my Tecartus isn't until February. bit of a cough",
        "I'm on the waiting list for CAR-T, nothing yet. sore throat and a cough",
        "my nivolumab was stopped in 2021, nothing since. coughing today",
        "the bispecific got postponed, so I've never had it. coughing today",
    ],
)
def test_a_therapy_that_is_not_now_means_not_on_immunotherapy(extractor: SymptomExtractor, text: str) -> None:
    assert extractor(text).on_immunotherapy is False


def test_a_therapy_had_recently_still_counts(extractor: SymptomExtractor) -> None:
    assert extractor("I had Kymriah last week and I have a cough").on_immunotherapy is True


def test_a_fragment_after_a_general_question_is_still_a_report(extractor: SymptomExtractor) -> None:
    """Review: "Is that normal? Lips blue and breathing fast?" must not inherit "general"."""
    assert {"skin_discoloration", "difficulty_breathing"} <= set(extractor("Is that normal? Lips blue and breathing fast?").present)


def test_a_follow_up_question_opened_by_and_is_still_a_question(extractor: SymptomExtractor) -> None:
    assert not extractor("and what about slurred speech, is that a sign too?").present


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("Three years ago my mum had a seizure after her CAR-T. She's doing great now.", "seizure"),
        ("Last week I fainted at the clinic and they kept me in. Fine since I got home.", "fainting"),
        ("this tax form is giving me a headache", "headache"),
        ("my hands are stained blue from the paint, took ages to wash off", "skin_discoloration"),
    ],
)
def test_old_episodes_and_figures_of_speech_are_not_reports(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    assert symptom not in extractor(text).present


def test_a_dated_start_of_sentence_that_dates_the_therapy_keeps_the_symptom(extractor: SymptomExtractor) -> None:
    assert "confusion" in extractor("Last week I had CAR-T and now I'm confused all the time").present


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("she can't keep anything down since lunch", "nausea"),
        ("he has 39 grade temperature", "fever"),
        ("dad went limp in his chair for a minute", "fainting"),
        ("feeling washed out today", "fatigue"),
    ],
)
def test_everyday_ways_of_saying_a_symptom(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    assert symptom in extractor(text).present


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("Today is day 5 after Kymriah and he had a seizure an hour ago. It settled after two minutes.", "seizure"),
        ("Kymriah 2 weeks ago. He had a seizure this morning. No seizures since then.", "seizure"),
        ("The patient has slurred speech and is very confused.", "confusion"),
        ("My friend's driving me to A&E because I can't breathe.", "difficulty_breathing"),
        ("A lady at the clinic told me to message you because my lips are blue.", "skin_discoloration"),
        ("She keeps telling me a man has been sitting at the end of her bed.", "hallucinations"),
        ("And why is he so drowsy and hard to wake?", "drowsiness"),
        ("Paracetamol gives no relief from my chest pain.", "chest_pain"),
        ("There's a heavy pressure in the middle of my chest that never stops hurting.", "chest_pain"),
        ("I didn't expect to be this short of breath after the infusion.", "difficulty_breathing"),
        ("Six months ago he was diagnosed with lymphoma and he is very confused.", "confusion"),
        ("When we were 10 minutes from the hospital she had a seizure.", "seizure"),
        ("Temp 38.3 and my heart feels like it is trying to escape through my ribs.", "rapid_heartbeat"),
        ("My heart skips a beat when I lie down.", "rapid_heartbeat"),
        ("I nearly passed out when I got up from the toilet.", "fainting"),
    ],
)
def test_review_present_emergencies_stay_present(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    """A fresh-eyes review's sentences: each new past, not-the-patient or question rule had hidden one."""
    assert symptom in extractor(text).present


@pytest.mark.parametrize(
    "text",
    [
        "My appointment got postponed and I have a headache and chills.",
        "I threw up this morning but nothing since, I have a headache and chills.",
        "I finished chemo years ago and had Kymriah last week, now I have a cough",
        "I'm not on chemo and Kymriah was given 4 days ago, I have a headache.",
    ],
)
def test_review_a_therapy_is_not_denied_by_words_about_something_else(extractor: SymptomExtractor, text: str) -> None:
    assert extractor(text).on_immunotherapy is not False


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("HE CANT BREATHE", "difficulty_breathing"),  # capitals: spaCy splits "cant", not "CANT"
        ("SHE WONT WAKE UP", "drowsiness"),
        ("SHE CANT TALK RIGHT ITS ALL SLURRED LIKE SHES DRUNK", "speech_difficulty"),  # a negation inside "can't talk"
        ("he is not breathing well", "difficulty_breathing"),  # the good state itself denied
        ("he isn't breathing right", "difficulty_breathing"),
        ("E no fit breathe well since morning, e dey pant", "difficulty_breathing"),
        ("her lips have gone violet", "skin_discoloration"),  # "gone" + a colour is became, not over
        ("his ears look mauve", "skin_discoloration"),
        ("Yesterday only 37.8, today she's at 104", "high_fever"),  # a bare 104 beside a temperature
        ("fever is thirty-nine and seven, the paracetamol not help", "high_fever"),
        ("he had fit this morning", "seizure"),  # "fit" is still a seizure outside its not_when senses
        ("chills n 104", "high_fever"),  # shivering is a fever cue for a bare number
        ("im shaking and its 40", "high_fever"),  # a bare 38-42 beside such a cue is °C
    ],
)
def test_present_emergencies_said_in_capitals_pidgin_colours_and_loose_numbers(
    extractor: SymptomExtractor, text: str, symptom: str
) -> None:
    assert symptom in extractor(text).present


@pytest.mark.parametrize(
    ("text", "absent", "present"),
    [
        ("I DONT HAVE A FEVER", "fever", None),
        ("no cough, breathing fine", "difficulty_breathing", None),  # a list running on
        ("no fever breathing ok", "difficulty_breathing", None),
        ("my shoes don't fit and no cough", "cough", None),  # "fit" is not a seizure
        ("she's 102 yrs old and temp 37.2", "fever", None),  # an age is no temperature
        ("I'm 40 and have chills, no cough", "cough", "chills"),
        ("chills for 40 minutes, no cough", "cough", "chills"),  # a count is no temperature
    ],
)
def test_denials_lists_and_numbers_that_are_not_emergencies(
    extractor: SymptomExtractor, text: str, absent: str | None, present: str | None
) -> None:
    found = extractor(text)
    assert not {"seizure", "high_fever", "difficulty_breathing"} & set(found.present)
    if absent:
        assert absent in found.absent
    if present:
        assert present in found.present


@pytest.mark.parametrize(
    "text",
    [
        # someone had it; figures of speech
        "I read on a forum that someone had hallucinations after Kymriah. Is that common?",
        "i'm so confused by the parking at the hospital lol, which entrance is for the day unit?",
        "I nearly passed out when I saw the hospital parking bill 😂 otherwise all fine here",
    ],
)
def test_other_people_figures_of_speech_and_questions_are_no_symptom(extractor: SymptomExtractor, text: str) -> None:
    assert not extractor(text).present


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("My husband had CAR-T last week. He is confused. I'm fine.", "confusion"),  # a relative: the treatment is his
        ("I had Kymriah. My husband says I'm confused but I feel fine", "confusion"),
        ("she says someone had come into her room and moved things, nobody was there", "hallucinations"),  # a scene
        ("mum is confused by the tv remote and doesn't know where she is", "confusion"),
        ("I nearly passed out when I got up from the toilet.", "fainting"),
        ("is this normal? he sees bugs on the wall", "hallucinations"),
    ],
)
def test_the_patient_is_still_the_patient(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    assert symptom in extractor(text).present


@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        # a second fresh-eyes review of session 4's rules: each of these had been hidden
        ("He had Kymriah last week and he's been fitting for ten minutes", "seizure"),
        ("She's fitting as I type this, had Kymriah 5 days ago", "seizure"),
        ("He had CAR-T last week and is getting fits again", "seizure"),
        ("He kept fitting in the ambulance", "seizure"),
        ("she had a proper fit", "seizure"),
        ("I'm fine. I think the CAR-T has done something to my husband, he is so confused and his lips are blue", "confusion"),
        ("Is this CAR-T why I can't breathe?", "difficulty_breathing"),
        ("She has a very high fever, 39.2 under the arm, had Kymriah Monday", "high_fever"),
        ("It was 38.2 at lunch and now he is burning up with a very high fever", "high_fever"),
        ("She had CAR-T. She's confused about the appointment, thinks it's 1985", "confusion"),
        ("Since Kymriah my husband is confused with the buttons on his phone, he uses it every day", "confusion"),
        ("My husband nearly fainted when he looked at me, had Kymriah Tuesday", "fainting"),
        ("I don't feel right, can't catch my breath", "difficulty_breathing"),  # a negation running on into "can't …"
    ],
)
def test_review_2_present_emergencies_stay_present(extractor: SymptomExtractor, text: str, symptom: str) -> None:
    assert symptom in extractor(text).present


@pytest.mark.parametrize(
    "text",
    [
        "Day 40 post CAR-T and I've got the chills",  # a day count is no temperature
        "My son is 40 and has chills after his CAR-T",  # nor an age
        "42F here, on Tecvayli, chills and sweats since yesterday",
        "had Kymriah last week, bit of a cough, not bad breathing fine",  # a list running on: breathing fine
        "On Kymriah. Mild cough, no issues breathing normally",
        "cough since yesterday but dont worry breathing ok",
        "keeping fit with a walk every day",
        "temp 36.9 this morning, weighed 104 kg",  # a weight is no temperature
    ],
)
def test_review_2_non_emergencies_stay_below_emergency(extractor: SymptomExtractor, text: str) -> None:
    found = extractor(text)
    assert not any(extractor.kb.symptoms[s].cls == "emergency" for s in found.present)
