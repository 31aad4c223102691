"""Symptom extraction with assertions: lay phrasing, typos, negation, questions, third person."""

from __future__ import annotations

import pytest

from bot.nlu.extractor import MAX_CHARS, SymptomExtractor

CASES = [
    # text, present, absent
    ("cant catch my breath", {"difficulty_breathing"}, set()),
    ("I can't breathe", {"difficulty_breathing"}, set()),
    ("my heart is pounding", {"rapid_heartbeat"}, set()),
    ("im burning up", {"high_fever"}, set()),
    ("her lips look blue", {"skin_discoloration"}, set()),
    ("the words come out wrong", {"speech_difficulty"}, set()),
    ("I blacked out in the kitchen", {"fainting"}, set()),
    ("i feel v weak", {"fatigue"}, set()),
    ("got a feaver and a hedache", {"fever", "headache"}, set()),
    ("my wife is confused and hard to wake", {"confusion", "drowsiness"}, set()),
    ("no fever", set(), {"fever"}),
    ("not short of breath", set(), {"difficulty_breathing"}),
    ("neither cough nor rash", set(), {"cough", "rash"}),
    ("fever: none", set(), {"fever"}),
    ("I don't have a headache but I feel dizzy", {"dizziness"}, {"headache"}),
    ("No headache, but my pulse is 130 at rest", {"rapid_heartbeat"}, {"headache"}),
    ("breathing is fine, heart rate normal", set(), {"difficulty_breathing", "rapid_heartbeat"}),
    ("my breathing is not ok", {"difficulty_breathing"}, set()),
    ("I can't stop coughing", {"cough"}, set()),
    ("not sure if it's a fever but I feel hot", {"fever"}, set()),
    ("the couch is comfy", set(), set()),
    ("I feel fine", set(), set()),
    ("I have not been eating, no appetite", {"loss_of_appetite"}, set()),
    ("I'm not on immunotherapy. I have a slight headache", {"headache"}, set()),
    ("this cough is getting worse every day", {"cough"}, set()),
]

HYPOTHETICAL = [
    "what if I get a fever?",
    "What should I do if my heart starts racing?",
    "the leaflet says to watch for confusion, how would I know?",
    "Can CRS cause headaches?",
    "is a rash a sign of CRS?",
]


@pytest.mark.parametrize("text, present, absent", CASES)
def test_assertions(extractor: SymptomExtractor, text: str, present: set[str], absent: set[str]) -> None:
    found = extractor(text)
    assert set(found.present) == present
    assert set(found.absent) == absent


@pytest.mark.parametrize("text", HYPOTHETICAL)
def test_questions_are_not_symptoms(extractor: SymptomExtractor, text: str) -> None:
    found = extractor(text)
    assert found.present == [] and found.absent == []
    assert found.hypothetical, "the symptom asked about is still recognised"


def test_relative_reporting_counts_as_present(extractor: SymptomExtractor) -> None:
    found = extractor("my husband is confused")
    assert found.present == ["confusion"]
    assert found.mentions[0].experiencer == "other"


def test_worsening_cue(extractor: SymptomExtractor) -> None:
    assert extractor("cough 2 weeks now and not improving").worsening
    assert not extractor("the cough is not getting worse").worsening
    assert not extractor("I have a cough").worsening


@pytest.mark.parametrize(
    "text, on, therapy",
    [
        ("I had Kymriah 5 days ago", True, "tisagenlecleucel"),
        ("I'm on blincyto", True, "blinatumomab"),
        ("I had CAR-T last week", True, None),
        ("I'm not on any treatment", False, None),
        ("never had immunotherapy", False, None),
        ("no immunotherapy for me", False, None),
        ("is Kymriah linked to CRS?", None, None),
    ],
)
def test_therapy_context(extractor: SymptomExtractor, text: str, on: bool | None, therapy: str | None) -> None:
    found = extractor(text)
    assert found.on_immunotherapy is on
    if therapy:
        assert found.therapy is not None and found.therapy.therapy == therapy


def test_therapy_time(extractor: SymptomExtractor) -> None:
    assert extractor("I had Kymriah 5 days ago").therapy.when == "5 days ago"


def test_vital_evidence_is_kept(extractor: SymptomExtractor) -> None:
    mention = next(m for m in extractor("SpO2 88%").mentions if m.source == "vital")
    assert mention.symptom == "difficulty_breathing" and "88" in mention.evidence and "92" in mention.evidence


def test_measured_high_fever_replaces_fever(extractor: SymptomExtractor) -> None:
    assert extractor("fever 39.9 C").present == ["high_fever"]


ODD_INPUT = ["", "   ", "\n\n", "🙂🙂🙂", "<script>alert(1)</script>", "'; DROP TABLE events; --", "Tengo fiebre y tos", "42", "x" * 30_000]


@pytest.mark.parametrize("text", ODD_INPUT)
def test_odd_input_does_not_crash(extractor: SymptomExtractor, text: str) -> None:
    found = extractor(text)
    assert isinstance(found.present, list)


def test_emergency_buried_in_a_huge_message(extractor: SymptomExtractor) -> None:
    filler = "we went to the shops and then had some soup. " * 400
    text = (filler[: MAX_CHARS // 2] + " suddenly I can't breathe. " + filler)[:MAX_CHARS]
    assert "difficulty_breathing" in extractor(text).present


def test_a_hallucination_told_as_a_statement_contradicted_later(extractor: SymptomExtractor) -> None:
    """Was a known miss (xfail) until corroboration: "we have no cats" backs the scene."""
    assert "hallucinations" in extractor("she says there are cats on the bed but we have no cats").present


@pytest.mark.parametrize(
    ("text", "present", "absent_from_present"),
    [
        ("he was shaking all over and jerking, then he bit his tongue", {"seizure"}, {"chills"}),
        ("she had a fit, whole body trembling, and she's shivering now with a temp", {"seizure", "chills"}, set()),
        ("I'm shaking under two blankets and can't get warm", {"chills"}, {"seizure"}),
    ],
)
def test_shaking_beside_a_seizure_is_the_seizures(
    extractor: SymptomExtractor, text: str, present: set[str], absent_from_present: set[str]
) -> None:
    found = set(extractor(text).present)
    assert present <= found and not absent_from_present & found, found


# Session 5, from the read blind files: each rule with a sentence it must change and one it must not.
SESSION_5_RULES = [
    ("I used to have seizures as a child but none for 30 years", "seizure", False),  # "to have" is no present tense
    ("Grandma used to get dizzy spells back in the 90s, is that hereditary?", "dizziness", False),  # "back in" is a date
    ("he had a seizure back in 2019 and it's back today", "seizure", True),  # a real return still counts
    ("my husband is chatting to his brother who died years ago like hes standing right there", "hallucinations", True),
    ("shaking fit again, second one tonight", "seizure", True),
    ("in my dream last night I couldn't speak, woke up fine", "speech_difficulty", False),
    ("he's dreaming with his eyes open and talking to people who aren't there", "hallucinations", True),
    ("in a dream-like state he's talking to his dead mother as if she's in the room", "hallucinations", True),
    ("watching Grey's anatomy and a guy had a seizure after immunotherapy, is that realistic?", "seizure", False),
    ("the boy had a fit at breakfast, he's on CAR-T", "seizure", True),  # a parent may mean the patient
    ("I had my rituximab on Monday and I am a little off colour today", "malaise", True),
    ("do you recommend a flu jab now?", "malaise", False),
    ("my wife is convinced I have man flu lol", "malaise", False),
    ("sorry if my typing is bad, english is my second language, nothing wrong with me!", "malaise", False),
    ("my dad says the nurses are in the kitchen stealing his pills but theirs nobody here", "hallucinations", True),
]

# Session 6: the same, from blind-q, the contrast messages and blind-t.
SESSION_6_RULES = [
    ("I'd like to know whether hallucinations are common after Breyanzi", "hallucinations", False),
    ("I'd like to know why he's so confused tonight", "confusion", False),  # a question about him, asked in general words
    ("seizures are rare with teclistamab, right?", "seizure", False),
    ("suppose she gets a seizure at home, what do we do?", "seizure", False),
    ("I suppose he's a bit confused since this morning", "confusion", True),  # "I suppose" is "I think"
    ("he's supposed to rest but he's slurring his words", "speech_difficulty", True),
    ("my cousins husband had CRS and was seeing things", "hallucinations", False),
    ("Three weeks ago I had a fever after the infusion", "fever", False),  # a past verb after the date
    ("3 weeks ago I had my CAR-T and I'm confused", "confusion", True),  # the date dates the treatment
    ("2 weeks ago his headaches started and they're no better", "headache", True),  # an onset runs to now
    ("my headaches started 3 weeks ago", "headache", True),
    ("Last year after my Yescarta I had a very high fever, all fine now", "high_fever", False),
    ("last week I had my Tecartus and had a seizure", "seizure", True),  # a recent date: not closed
    ("Last month after my Kymriah I had a fever and a racing heart for a few days", "rapid_heartbeat", False),
    ("a rash on my back since this morning, not itchy", "rash", True),  # "since this morning" dates an onset, not "none since"
    ("it's 38.6 today and I ache more than yesterday", "body_pain", True),
    ("my lips are purple from the beetroot juice", "skin_discoloration", False),
    ("been feeling a bit blue lately, down about it all", "skin_discoloration", False),
    ("I feel my lips are going blue", "skin_discoloration", True),
    ("I blacked out the windows with foil to sleep in the day", "fainting", False),
    ("I blacked out in the kitchen", "fainting", True),
    # someone else by grammar: a stranger with an article before the words
    ("in the waiting room a woman just collapsed, I'm fine", "fainting", False),
    ("the bloke in the film can't get his words out", "speech_difficulty", False),
    ("the man next to me was confused", "confusion", False),  # "me" is no subject
    ("a lady at the pharmacy said my lips look blue", "skin_discoloration", True),  # "my": the patient
    ("the old man is confused again", "confusion", True),  # "the old man" may be dad
    ("the boy had a fit at breakfast", "seizure", True),  # children left out: a parent may mean the patient
    ("dad says a man is standing in the corner and nobody is there", "hallucinations", True),  # a scene's strangers
    # ... and relatives once the writer says they are the patient
    ("my sister phoned, she has a high fever. I'm the one on Kymriah and I'm fine", "high_fever", False),
    ("I'm the one on Kymriah. My wife says I'm slurring", "speech_difficulty", True),
    ("my husband collapsed in the kitchen", "fainting", True),
    # figures of speech
    ("my heart nearly jumped out of my chest when the alarm went off", "rapid_heartbeat", False),
    ("my heart is pounding out of my chest", "rapid_heartbeat", True),
    ("I've told them till I'm blue in the face", "skin_discoloration", False),
    ("he's blue in the face and gasping", "skin_discoloration", True),
    ("we had a power blackout last night, are his meds ok?", "fainting", False),
    ("the tyre pressure was low on the way in", "low_blood_pressure", False),
    ("police made a big drug seizure on the news", "seizure", False),
    ("I nearly had a fit when I saw the bill", "seizure", False),
    ("I need to get something off my chest: the nurses are wonderful", "chest_pain", False),
    ("I'm lost for words, thank you all", "speech_difficulty", False),
    ("the leaflet says it may cause drowsiness", "drowsiness", False),
    ("she had febrile seizures as a baby", "seizure", False),
    # a temperature of the weather, not the body
    ("heatwave here, 41°C on the car dashboard", "high_fever", False),
    ("temp 39.9 and we're outside in the garden", "high_fever", True),
    ("hot as an oven, 41 on the forehead thermometer", "high_fever", True),
    ("right after my first rituximab I spiked 40 and shook", "low_blood_pressure", False),  # "first" is no systolic
    ("first reading 85/50 then 88/55", "low_blood_pressure", True),
    ("mum forgot where she put her glasses again", "confusion", False),
    ("he forgot where he was and got lost in our house", "confusion", True),
    ("seeing things a bit blurry when I read", "hallucinations", False),
    ("couldn't get a word in edgeways at dinner", "speech_difficulty", False),
    ("the neighbour's lad had a seizure on the drive", "seizure", False),
    ("talking fine but a sore head since this morning", "speech_difficulty", False),
    ("she sleeps a lot but wakes easily", "drowsiness", False),
    ("no problems to report, feeling like myself again", "malaise", False),
    ("not feeling like myself at all today", "malaise", True),  # a negation turns "as usual" round
]


# Issue 12, session 7: whose therapy the message names, completion words that close the dated
# sentence before them, media, general statements, idioms. Each rule with the case it must not break.
SESSION_7_RULES = [
    # the writer names their own therapy: a relative's symptom is then someone else's
    ("A friend told me her brother had a seizure after his T-cell therapy. I'm starting Tecvayli next week.", "seizure", False),
    ("I had my Kymriah on Monday. My husband says I'm slurring my words", "speech_difficulty", True),
    ("Mum had CAR-T last week and I'm on Keytruda myself. she is confused now", "confusion", True),  # Mum may be the patient
    ("we had the CAR-T on the 3rd and now he's confused", "confusion", True),  # a carer's "we"
    # an unknown word may be the person
    ("my oga received the blinatumomab on Tuesday, he is breathing fast fast", "difficulty_breathing", True),
    # from a review: a therapy named as the kind of a thing, a relative's therapy, a relative who reports
    ("I have the CAR-T hotline number here. My husband is slurring his words and very confused.", "speech_difficulty", True),
    ("I was given the Kymriah leaflet yesterday. My dad is really confused", "confusion", True),
    ("I got the Kymriah info pack yesterday. My son has a fever of 39.8 and is hard to wake", "high_fever", True),
    ("My son's CAR-T was on Monday. I'm on Keytruda myself. He is confused and slurring.", "confusion", True),
    ("I had my CAR-T on Monday. My wife noticed slurred speech tonight.", "speech_difficulty", True),
    ("Had my Kymriah last week. Wife says speech slurred and not making sense.", "speech_difficulty", True),
    ("Had my Tecvayli dose yesterday. my partner found me on the floor not responding", "fainting", True),
    # a completion word closes only a dated episode, and never one hoped for
    ("Back in March after my first dose I spiked 40. Nothing like that since.", "high_fever", False),
    ("She had a fit this morning and nothing like that since but she is very sleepy", "seizure", True),
    ("I had Yescarta on Monday and now my speech is all slurred. The nurse said it will resolve.", "speech_difficulty", True),
    ("I had CRS in January with a high fever and low blood pressure. It all settled.", "low_blood_pressure", False),
    ("She had Yescarta on Monday and now she is confused. It resolved with tylenol though.", "confusion", True),
    ("I had Yescarta on Monday and my speech is all slurred. Hopefully it settled.", "speech_difficulty", True),
    # general statements
    ("I heard people can hallucinate on this treatment, what would it look like", "hallucinations", False),
    ("some patients can get very confused, the nurse said", "confusion", False),
    ("people sometimes cant wake her up now", "drowsiness", True),
    ("we were watching a drama about doctors when he started fitting", "seizure", True),
    # idioms
    ("I'm a bit confused by the discharge instructions, do I stay near the hospital?", "confusion", False),
    ("he's confused about where he is", "confusion", True),
    ("my brother says I go blue in the face when I lose at cards", "skin_discoloration", False),
    ("his lips have gone blue in the face of the cold", "skin_discoloration", True),
    # typed fast, and two denials that make one report
    ("chst hurts like some1 is standin on it", "chest_pain", True),
    ("my heart is going a mile a minute, I had the cells on the fourth", "rapid_heartbeat", True),
    ("I can't walk to the loo without getting breathless", "difficulty_breathing", True),
    ("I'm not breathless, I can walk to the shops without stopping", "difficulty_breathing", False),
    ("I woke up on the bathroom floor with a bump on my head", "fainting", True),
]


@pytest.mark.parametrize(("text", "symptom", "present"), SESSION_5_RULES + SESSION_6_RULES + SESSION_7_RULES)
def test_language_rule(extractor: SymptomExtractor, text: str, symptom: str, present: bool) -> None:
    assert (symptom in extractor(text).present) is present, extractor(text).mentions


def test_not_on_that_or_any_other_immunotherapy(extractor: SymptomExtractor) -> None:
    assert extractor("do you only help CAR-T patients? I'm not on that or any other immunotherapy").on_immunotherapy is False
    assert extractor("I'm on that immunotherapy, the bispecific one").on_immunotherapy is True
