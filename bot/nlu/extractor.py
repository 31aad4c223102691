"""SymptomExtractor: free text → symptom mentions with assertions, vitals, therapy context.

Pure Python over spaCy (no Rasa import), so the rules are unit-tested directly and the Rasa
component (bot/nlu/rasa_component.py) is a thin wrapper.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from spacy.tokens import Doc, Span, Token

from bot.clinical.knowledge import KnowledgeBase, LanguageRules, load_knowledge_base, load_language_rules
from bot.nlu.clauses import clause_spans
from bot.nlu.context import ContextScopes, Trigger, resolve_overlaps
from bot.nlu.detector import EmergencyDetector, features
from bot.nlu.pipeline import CompiledRules, build_pipeline
from bot.nlu.semantic import SemanticMatcher, load_semantic_config
from bot.nlu.vitals import Vital, VitalsParser

PRESENT, ABSENT, HYPOTHETICAL, PAST = "present", "absent", "hypothetical", "past"
# Words that may stand between a negation and the good state it denies: "not really breathing
# normally", "e no fit breathe well", "isn't able to breathe properly".
GOOD_STATE_BRIDGE = frozenset({"really", "fit", "able", "to", "be", "been", "very", "so", "too", "quite", "always"})
log = logging.getLogger(__name__)
NOT_PATIENT = "not_patient"  # someone who is not the patient: a neighbour, a pet ("my cat is throwing up, not me")
# Longer messages are cut here; 20,000 characters (the largest Telegram allows is 4,096) is plenty.
# Tokens after a past cue searched for a recurrence word ("2 weeks ago and another one just now").
RECURRENCE_WINDOW = 6
# A run of unexplained words that starts with one of these right after a finding only says where
# or when that finding is ("itchy red rash [on my chest and arms since this morning]").
QUESTION_FILLERS = frozenset({"and", "so", "but", "ok", "okay", "also", "oh", "well", "then", "um", "hmm", ","})
PERSON_WORDS = frozenset({"i", "me", "my", "mine", "he", "him", "his", "she", "her", "hers", "we", "our", "us", "they", "them", "their"})
SINCE_ONSET = frozenset(
    {"this", "yesterday", "last", "the", "early", "lunch", "lunchtime", "breakfast", "dinner", "morning", "tonight", "today"}
    | {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}
)
MINE_OR_OLD = frozenset({"my", "our", "old", "his", "her", "your"})  # "my man", "the old man": may well be the patient
FIRST_PERSON = frozenset({"i", "im", "ive", "id", "we", "my", "our", "myself"})
NOT_YET_WORDS = frozenset(
    {"will", "ll", "'ll", "should", "would", "may", "might", "could", "to", "hope", "hopefully", "until", "till", "if", "wait"}
)
THEIR_WORDS = frozenset({"his", "her", "their", "we", "our"})
PRONOUNS = frozenset({"he", "she", "they", "him", "her", "them"})
MY_OWN = frozenset({"i", "im", "ive", "id", "my", "myself", "me", "mine"})  # not "we": "we had the CAR-T on the 3rd" is a carer's
# words that may stand between "I"/"my" and a therapy that is the writer's own: "I've just had my first dose of";
# not "the", "a", "have", "got", "given": "I have the CAR-T hotline number", "I was given the Kymriah leaflet"
MY_THERAPY_BRIDGE = frozenset(
    "on had 've 'm am started starting having received was been first second third 1st 2nd 3rd last next own new "  # noqa: SIM905
    "dose doses of infusion cycle round shot treatment course is also too just already still currently now today yesterday".split()
)
# a therapy named as the kind of a thing is no therapy the writer had: "the Kymriah leaflet", "a CAR-T patient"
THERAPY_AS_KIND = frozenset(
    "leaflet leaflets booklet hotline number phone line patient patients info information pack card nurse nurses team ward "  # noqa: SIM905
    "clinic unit trial paperwork group forum website app session class video talk".split()
)
# a relative who reports the patient's symptom is not the one who has it: "my wife noticed slurred speech"
REPORTING_VERBS = frozenset(
    "say says said saying notice noticed notices think thinks thought reckon reckons tell told tells found find finds "  # noqa: SIM905
    "saw see sees seen heard hear hears spotted spot mentioned mention worried worries asked asks".split()
)
ARTICLES = frozenset({"a", "an", "the", "this", "that", "another", "some", "one"})
CLAUSE_STOPS = frozenset({",", ";", ".", "!", "?", ":", "—", "–"})
ONSET_WORDS = frozenset({"since", "start", "started", "starting", "began", "begun", "begin"})
PAST_VERBS = frozenset(
    {
        "had",
        "was",
        "were",
        "got",
        "went",
        "felt",
        "fell",
        "came",
        "saw",
        "spent",
        "took",
        "woke",
        "lost",
        "ran",
        "kept",
        "threw",
        "shook",
        "did",
    }
)
NOT_PAST = frozenset({"need", "tired", "bed", "red", "scared", "worried", "confused", "dazed", "slurred", "bloated", "infused"})
PRESENT_TENSE = frozenset({"is", "are", "am", "'s", "'re", "'m", "has", "have", "keeps", "isnt", "cant"})
ATTACHED_WORDS = frozenset(
    [
        "on",
        "in",
        "at",
        "around",
        "across",
        "under",
        "over",
        "all",
        "from",
        "since",
        "for",
        "of",
        "with",
        "behind",
        "near",
        "by",
        "down",
        "up",
        "along",
        "when",
        "whenever",
        "while",
        "even",
        "every",
        "each",
        "if",
        "after",
        "before",
    ]
)
# Content words the rules left unexplained in a clause before that rest is read by meaning.
REST_MIN_WORDS = 3
MAX_CHARS = 20_000

_WHEN_RE = re.compile(
    r"\b(?:(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|a|an|a couple of|a few|couple)"
    r"\s+(?:hours?|hrs?|days?|weeks?|wks?|months?)\s+ago"
    r"|yesterday|today|this (?:morning|afternoon|evening|week)"
    r"|last (?:night|week|month|monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"|on (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"|(?:since|on) (?:the )?\d{1,2}(?:st|nd|rd|th)?(?: of)? ?(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*"
    r"|\d{1,2}[./-]\d{1,2}(?:[./-]\d{2,4})?)\b",
    re.IGNORECASE,
)


def _onset_since(t: Token) -> bool:
    """ "since" that dates an onset ("a rash since this morning, not itchy"), not "none since"."""
    nxt = t.doc[t.i + 1] if t.i + 1 < len(t.doc) else None
    return t.lower_ == "since" and nxt is not None and (nxt.like_num or nxt.lower_ in SINCE_ONSET)


def _past_verb(t: Token) -> bool:
    """A verb in the past ("had", "spiked"), by its form: no tagger runs. ("has fainted" still
    counts: a date before it dates it.)"""
    return t.lower_ in PAST_VERBS or (t.is_alpha and len(t) > 4 and t.lower_.endswith("ed") and t.lower_ not in NOT_PAST)


def _says(tokens: Span | list[Token], phrases: tuple[tuple[str, ...], ...]) -> bool:
    """Whether one of the word sequences (lower case) occurs in `tokens`."""
    words = [t.lower_ for t in tokens]
    return any(words[i : i + len(p)] == list(p) for p in phrases for i in range(len(words)))


def _clause_texts(doc: Doc) -> list[str]:
    return [doc[a:b].text for a, b in clause_spans(doc)]


def _symptom_spans(doc: Doc, matches: list[tuple[int, int, int]]) -> tuple[list[tuple[int, int, str, str]], list[tuple[int, int, str]]]:
    """The phrase matches as (start, end, symptom, polarity) without those inside one of their
    symptom's `not_when` phrases ("shake him awake", "shoes that fit"), and the `not_when` spans."""
    labelled = [(s, e, *doc.vocab.strings[m].split("|")) for m, s, e in matches]
    excepted = [(s, e, sid) for s, e, sid, kind in labelled if kind == "not_when"]
    said = [
        (s, e, sid, kind)
        for s, e, sid, kind in labelled
        if kind != "not_when" and not any(sid == other and a <= s and e <= b for a, b, other in excepted)
    ]
    return said, excepted


@dataclass(frozen=True)
class SymptomMention:
    symptom: str
    assertion: str  # present | absent | hypothetical | past
    text: str
    start: int  # character offsets in the message
    end: int
    source: str  # phrase | vital | semantic
    evidence: str  # why: the words, or the vital and the threshold it crossed
    experiencer: str = "patient"  # patient | other (a relative writing; still present)
    cue: str = ""  # the negation / hypothetical words that modified it
    score: float = 1.0  # a semantic read's similarity; 1.0 for what words or numbers say


@dataclass(frozen=True)
class Question:
    """An emergency the semantic layer suspects but is not sure of: ask, don't guess."""

    symptom: str
    text: str  # the clause
    score: float
    start: int
    end: int
    clear: bool = True  # beats every background sentence by the margin (only the threshold is missing)


@dataclass(frozen=True)
class TherapyMention:
    therapy: str | None  # knowledge-base therapy id when a drug is named
    kind: str
    name: str
    assertion: str
    text: str
    start: int
    end: int
    when: str | None = None


@dataclass
class Findings:
    text: str
    mentions: list[SymptomMention] = field(default_factory=list)
    therapies: list[TherapyMention] = field(default_factory=list)
    worsening: list[str] = field(default_factory=list)
    vitals: list[Vital] = field(default_factory=list)
    # per reading in `vitals`: "measured", or the context that makes it no reading of the patient
    # now (hypothetical, past, not_patient): "what if it hits 39.5" is not a temperature to chart
    vital_contexts: list[str] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)
    truncated: bool = False

    def ids(self, assertion: str) -> list[str]:
        """Symptom ids with this final assertion (present beats absent beats hypothetical)."""
        final: dict[str, str] = {}
        rank = {PRESENT: 4, ABSENT: 3, HYPOTHETICAL: 2, PAST: 1, NOT_PATIENT: 1}
        for m in self.mentions:
            if rank[m.assertion] > rank.get(final.get(m.symptom, ""), 0):
                final[m.symptom] = m.assertion
        return sorted(s for s, a in final.items() if a == assertion)

    @property
    def present(self) -> list[str]:
        return self.ids(PRESENT)

    @property
    def absent(self) -> list[str]:
        return self.ids(ABSENT)

    @property
    def hypothetical(self) -> list[str]:
        return self.ids(HYPOTHETICAL)

    @property
    def on_immunotherapy(self) -> bool | None:
        if any(t.assertion == PRESENT for t in self.therapies):
            return True
        if any(t.assertion == ABSENT for t in self.therapies):
            return False
        return None

    @property
    def therapy(self) -> TherapyMention | None:
        """The most specific therapy the patient says they had: a named drug over a kind."""
        present = [t for t in self.therapies if t.assertion == PRESENT and t.kind != "denial_only"]
        named = [t for t in present if t.therapy]
        return named[0] if named else (present[0] if present else None)


class SymptomExtractor:
    """Finds symptoms, vitals and immunotherapy context in one message."""

    def __init__(
        self, kb: KnowledgeBase | None = None, rules: LanguageRules | None = None, semantic: SemanticMatcher | bool = True
    ) -> None:
        """`semantic`: a matcher, True for the one data/semantic.yml configures (unless it is
        disabled there), False for the rules alone."""
        self.kb = kb or load_knowledge_base()
        self.rules = rules or load_language_rules()
        self.compiled: CompiledRules = build_pipeline(self.kb, self.rules)
        self.vitals = VitalsParser(self.kb)
        self._therapy_names = {t.id: t for t in self.kb.therapies}
        self.semantic: SemanticMatcher | None
        if semantic is True:
            config = load_semantic_config(self.kb)
            self.semantic = SemanticMatcher(self.kb, config) if config.enabled else None
        else:
            self.semantic = semantic or None
        self.detector: EmergencyDetector | None = None
        if self.semantic is not None and self.semantic.config.detector.enabled:
            try:
                self.detector = EmergencyDetector.load_or_train(
                    self.semantic.config.detector, self.semantic, self.clause_texts, depends_on=(self.rules.path,)
                )
            except Exception:  # noqa: BLE001 - a second opinion that cannot be built must not stop the first
                log.exception("the whole-message detector could not be loaded or trained; running without it")

    def clause_texts(self, text: str) -> list[str]:
        """The clauses of a message as the semantic layer reads them."""
        return _clause_texts(self.compiled.nlp(text))

    @property
    def nlp(self):  # noqa: ANN201 - spaCy Language
        return self.compiled.nlp

    def __call__(self, text: str) -> Findings:
        text = text or ""
        truncated = len(text) > MAX_CHARS
        text = text[:MAX_CHARS]
        findings = Findings(text=text, truncated=truncated)
        if not text.strip():
            return findings
        doc = self.compiled.nlp(text)
        therapy_matches = self.compiled.therapies(doc)
        therapy_starts = {s for _, s, _ in therapy_matches}
        doc.user_data["therapy_spans"] = [(s, e) for _, s, e in therapy_matches]  # for _writer_is_patient, asked deep down
        found = []
        for m, s, e in self.compiled.context(doc):
            rule = self.rules.context_rules[int(doc.vocab.strings[m])]
            found.append(Trigger(s, min(e, s + rule.keep) if rule.keep else e, rule))  # `keep`: the rest only has to follow
        # a `not_after` word before a trigger makes it a determiner when a therapy follows: "not on any of that immunotherapy"
        determiners = [
            t for t in found if t.start and doc[t.start - 1].lower_ in t.rule.not_after and therapy_starts & set(range(t.end, t.end + 3))
        ]
        triggers = resolve_overlaps([t for t in found if t not in determiners], doc)
        said, excepted = _symptom_spans(doc, self.compiled.symptoms(doc))
        scopes = ContextScopes(
            doc,
            triggers,
            self.rules.default_max_scope,
            therapies=[(s, e) for _, s, e in therapy_matches],
            symptom_starts={s for s, _, _, _ in said},
            symptom_tokens={i for s, e, _, _ in said for i in range(s, e)},
            complaint_words=self.rules.complaint_words,
        )
        questions = self._question_sentences(doc)
        findings.mentions = self._phrase_mentions(doc, said, scopes, questions)
        findings.vitals = self.vitals.parse(text)
        findings.mentions += self._vital_mentions(doc, findings.vitals, scopes, questions)
        findings.vital_contexts = [self._reading_context(doc, v, scopes) for v in findings.vitals]
        detector_candidates: list[Question] = []  # every present clause near an emergency, for the detector
        if self.semantic is not None:
            covered = [(m.start, m.end, m.symptom) for m in findings.mentions] + [(v.start, v.end, v.symptom) for v in findings.vitals]
            semantic, findings.questions, detector_candidates = self._semantic_mentions(doc, covered, scopes, questions, findings.vitals)
            # a clause a `not_when` phrase explains is not that symptom by meaning either ("my heart skipped a beat when …")
            chars = [(doc[a].idx, doc[b - 1].idx + len(doc[b - 1]), sid) for a, b, sid in excepted]

            def explained(read: SymptomMention | Question) -> bool:
                return any(sid == read.symptom and a < read.end and read.start < b for a, b, sid in chars)

            semantic = [m for m in semantic if not explained(m)]
            detector_candidates = [q for q in detector_candidates if not explained(q)]
            findings.mentions += semantic
        findings.mentions = self._reconcile(doc, findings.mentions, scopes)
        # a message in doubt scored below doubt_below < fires_from: the detector cannot fire on it
        if self.detector is not None and not self._doubted(doc, findings) and detector_candidates:
            self._detected(doc, findings, detector_candidates)
        findings.therapies = self._therapy_mentions(doc, therapy_matches, scopes, questions)
        findings.worsening = [doc[t.start : t.end].text for t in self._worsening(doc, scopes, questions)]
        return findings

    # -- pieces ----------------------------------------------------------------------------
    def _question_sentences(self, doc: Doc) -> set[int]:
        """Start tokens of sentences that are general questions ("can CRS cause a rash?")."""
        cue_starts = {s for _, s, _ in self.compiled.present_cues(doc)}
        found = set()
        for sent in doc.sents:
            words = [t for t in sent if not t.is_space]
            said = len(words)
            while words and words[0].lower_ in QUESTION_FILLERS:  # "and what about slurred speech?"
                words = words[1:]
            asked = bool(words) and words[-1].text == "?" and not any(sent.start <= c < sent.end for c in cue_starts)
            # after a stripped "and"/"so", a question about him or her is about the patient ("and why is he so drowsy?")
            stripped = len(words) < said
            if (
                asked
                and words[0].lower_ in self.rules.question_starters
                and not (stripped and any(t.lower_ in PERSON_WORDS for t in words))
            ):
                found.add(sent.start)
        return found

    def _assert(
        self, span: tuple[int, int], doc: Doc, scopes: ContextScopes, questions: set[int], absent: bool, symptom: str = ""
    ) -> tuple[str, str, str]:
        mods = scopes.modifiers(span)
        experiencer = "other" if "experiencer" in mods else "patient"
        decided = self._context_assertion(mods, span[0], doc, scopes, questions, symptom)
        if decided is not None:
            return decided
        if "negated" in mods:
            t = mods["negated"]
            # A negation in front of an "absent" phrase is usually a list running on ("no chest
            # pain, breathing fine"); "breathing is not fine" has its own present phrase. Right
            # before it, the good state itself is denied: "not breathing well", "can't breathe
            # well", "e no fit breathe well".
            between = doc[t.end : span[0]]
            if absent and all(w.lower_ in GOOD_STATE_BRIDGE for w in between):
                return PRESENT, experiencer, ""
            return ABSENT, experiencer, doc[t.start : t.end].text
        return (ABSENT if absent else PRESENT), experiencer, ""

    def _context_assertion(
        self, mods: dict[str, Trigger], start: int, doc: Doc, scopes: ContextScopes, questions: set[int], symptom: str = ""
    ) -> tuple[str, str, str] | None:
        """What a context cue decides before any denial, in this order: hypothetical, a general
        question, someone who is not the patient, a past episode that is over. None: no such cue."""
        experiencer = "other" if "experiencer" in mods else "patient"
        if "hypothetical" in mods:
            t = mods["hypothetical"]
            return HYPOTHETICAL, experiencer, doc[t.start : t.end].text
        if doc[start].sent.start in questions:
            return HYPOTHETICAL, experiencer, "question"
        if "nonpatient" in mods:
            t = mods["nonpatient"]
            return NOT_PATIENT, "other", doc[t.start : t.end].text
        # who said words are about (phrases and readings: a clause read by meaning has its subject inside it)
        subject = self._someone_else(doc, start, strangers=symptom not in self.rules.strangers_skip) if symptom else None
        if subject is not None:
            return NOT_PATIENT, "other", subject.text
        if "historical" in mods and self._over(mods["historical"], start, doc, scopes):
            t = mods["historical"]
            return PAST, experiencer, doc[t.start : t.end].text
        return None

    def _someone_else(self, doc: Doc, i: int, lookback: int = 12, strangers: bool = True) -> Token | None:
        """Who the words at token i are about, when that is someone other than the patient: the
        nearest person word before them in their clause (no parser runs: words, not a tree).
        language.yml `strangers` with an article ("a man just collapsed", "the guy on the telly
        can't get his words out"); `relatives` and "he"/"she" once the writer says they are the
        patient ("she has a high fever … I'm the one on Kymriah"). "I", "my", "we" first: the
        patient ("a man I met said my lips look blue")."""
        sent_start = doc[min(i, len(doc) - 1)].sent.start  # i may be the end of the message
        for j in range(i - 1, max(sent_start, i - lookback) - 1, -1):
            tok = doc[j]
            if tok.text in CLAUSE_STOPS or "\n" in tok.text or tok.lower_ in FIRST_PERSON:
                return None
            words = {tok.lower_, tok.norm_}
            if strangers and words & self.rules.strangers:
                before = {t.lower_ for t in doc[max(doc[i].sent.start, j - 3) : j]}
                if before & ARTICLES and not before & MINE_OR_OLD:
                    return tok
                return None
            if words & self.rules.relatives:
                if any(t.lower_ in REPORTING_VERBS for t in doc[j + 1 : i]):
                    return None  # the relative tells what they saw: "my wife noticed slurred speech"
                return tok if self._writer_is_patient(doc) else None
        return None

    def _relative_subject(self, doc: Doc, a: int, b: int) -> Token | None:
        """In a message whose writer is the patient, the relative a clause read by meaning is
        about ("I'm on Keytruda … my wife had to turn it off"): the nearest person word before its
        end, unless "I"/"my" comes first ("my wife says I seem muddled" stays mine). A relative
        named, not "he"/"she"/"they", and no stranger: people are part of what a confused or
        hallucinating patient tells ("I know he's not there")."""
        if not self._writer_is_patient(doc):
            return None
        subject = self._someone_else(doc, b, lookback=b - a, strangers=False)  # b may be the message's end
        return subject if subject is not None and subject.lower_ not in PRONOUNS else None

    def _writer_is_patient(self, doc: Doc) -> bool:
        """Whether the message says its writer is the patient (language.yml `writer_is_patient`),
        worked out once per message."""
        if "writer_is_patient" not in doc.user_data:
            text = doc.text.lower().replace("\u2019", "'")
            doc.user_data["writer_is_patient"] = any(re.search(p, text) for p in self.rules.writer_is_patient) or self._only_my_therapy(doc)
        return doc.user_data["writer_is_patient"]

    def _only_my_therapy(self, doc: Doc) -> bool:
        """The message names the writer's own therapy and nobody else's ("I'm on Keytruda myself"
        beside "Mum had CAR-T" leaves it open: Mum may be the patient)."""
        owners = {self._therapy_owner(doc, s, e) for s, e in doc.user_data.get("therapy_spans", ())}
        return "mine" in owners and "theirs" not in owners

    def _therapy_owner(self, doc: Doc, start: int, end: int, lookback: int = 6) -> str | None:
        """Whose the therapy named at `start`:`end` is: "mine" ("I'm on Blincyto", "my CAR-T", "they
        gave me Kymriah"), "theirs" ("my husband's CAR-T", "he had his Kymriah", "we had the
        CAR-T": a carer may say "we"), or None when the words do not say."""
        if {t.lower_ for t in doc[end : end + 2]} & THERAPY_AS_KIND:
            return None  # "the CAR-T hotline number", "the Kymriah info pack"
        people = self.rules.relatives | self.rules.strangers
        for j in range(start - 1, max(doc[start].sent.start, start - lookback) - 1, -1):
            tok = doc[j]
            if tok.text in CLAUSE_STOPS or "\n" in tok.text:
                return None
            if {tok.lower_, tok.norm_} & people or tok.lower_ in THEIR_WORDS:
                return "theirs"
            if tok.lower_ in ("'s", "’s") and j > 0 and {doc[j - 1].lower_, doc[j - 1].norm_} & people:
                return "theirs"  # "my son's CAR-T"
            if tok.lower_ in MY_OWN:
                return "mine"
            if tok.lower_ not in MY_THERAPY_BRIDGE:
                return None  # "my oga received the blinatumomab": a word we do not know may be the person
        return None

    def _worsening(self, doc: Doc, scopes: ContextScopes, questions: set[int]) -> list[Trigger]:
        """Worsening said of the patient now: not supposed ("call if it gets worse"), asked in
        general ("what if it gets worse?"), over, or about someone else."""
        return [
            t
            for t in scopes.in_message("worsening")
            if self._context_assertion(scopes.modifiers((t.start, t.end)), t.start, doc, scopes, questions) is None
        ]

    def _over(self, cue: Trigger, start: int, doc: Doc, scopes: ContextScopes) -> bool:
        """Whether a past cue really closes the episode. Not when the sentence goes on to say it is
        back ("a seizure 2 weeks ago and another one just now") or runs from the cue to now
        ("confused since his infusion 2 weeks ago"): safety over cleverness."""
        if cue.rule.needs_date and not self._dated(doc[start].sent, scopes):
            return False
        sent = doc[start].sent
        # "back" in a date ("dizzy spells back in the 90s") is no return of the symptom
        dates = {i for t in scopes.in_message("historical") for i in range(t.start, t.end)}
        window = [t for t in doc[cue.end : min(sent.end, cue.end + RECURRENCE_WINDOW)] if t.i not in dates]
        if _says(window, self.rules.recurrence_words):
            return False
        lo, hi = min(start, cue.start), max(start, cue.start)
        # The cue dates a treatment named just before it, not the symptom: "104.2, had Tecartus last week",
        # or between it and the symptom: "last week I had CAR-T and I'm confused".
        # (Forward only for a recent date: after "Yescarta last spring" the fever is that old episode.)
        recent = "week" in cue.rule.literal
        if any(e <= cue.start and cue.start - e <= 2 and (start < e or (recent and start >= cue.end)) for e in scopes.therapy_ends):
            return False
        # (Not for an old date when a past verb follows the treatment: "last year after my CAR-T I had a high fever".)
        if (
            cue.start - sent.start <= 1
            and cue.end <= start
            and any(cue.end <= b <= start for b in scopes.therapy_starts)
            and (recent or not any(_past_verb(t) for e in scopes.therapy_ends if cue.end < e <= start for t in doc[e:start]))
        ):
            return False
        if cue.rule.needs_past and cue.end <= start and not any(_past_verb(t) for t in doc[cue.end : start]):
            return False
        # A past cue reaching forward stops at a verb in the present: "six months ago he was
        # diagnosed and he is very confused" (the surface form: lemmas would make "was" "is").
        # ("used to have seizures": a verb after "to" is an infinitive, not the present)
        if cue.end <= start and any(t.lower_ in PRESENT_TENSE and doc[t.i - 1].lower_ != "to" for t in doc[cue.end : start]):
            return False
        # "since" or an onset runs from the date to now: "headaches started 3 weeks ago"
        return not any(t.lower_ in ONSET_WORDS for t in doc[lo:hi])

    def _phrase_mentions(
        self, doc: Doc, said: list[tuple[int, int, str, str]], scopes: ContextScopes, questions: set[int]
    ) -> list[SymptomMention]:
        """`said`: the phrase matches `_symptom_spans` kept, as (start, end, symptom, polarity)."""
        # Longest span first (at equal length "present" before "absent"). A span inside a longer
        # one is dropped ("shaking" inside "shaking uncontrollably"), and so is any overlap with
        # the same symptom; two different symptoms that only partly overlap are both kept
        # ("chest is burning and hurts to breathe").
        spans = sorted(said, key=lambda s: (-(s[1] - s[0]), s[3] != "present", s[0]))
        saying: dict[str, set[int]] = {}
        for start, end, sid, polarity in spans:
            if polarity == "present":
                saying.setdefault(sid, set()).update(range(start, end))
        kept: list[tuple[int, int, str]] = []
        mentions = []
        for start, end, sid, polarity in spans:
            if any((a <= start and end <= b) or (sid == other and start < b and a < end) for a, b, other in kept):
                continue
            kept.append((start, end, sid))
            span: Span = doc[start:end]
            assertion, experiencer, cue = self._assert((start, end), doc, scopes, questions, polarity == "absent", sid)
            if assertion == ABSENT and polarity == "present" and self._negation_says_it((start, end), sid, saying, scopes):
                # the negation is part of another phrase of the same symptom: "she can't talk right,
                # it's all slurred" says it twice, it does not deny it; nor does one running on
                # into a phrase with its own ("I don't feel right, can't catch my breath")
                assertion, cue = PRESENT, ""
            mentions.append(
                SymptomMention(sid, assertion, span.text, span.start_char, span.end_char, "phrase", f'said "{span.text}"', experiencer, cue)
            )
        return sorted(mentions, key=lambda m: m.start)

    @staticmethod
    def _negation_says_it(span: tuple[int, int], sid: str, saying: dict[str, set[int]], scopes: ContextScopes) -> bool:
        """Whether the negation denying a present phrase is part of how the symptom is said: inside
        another phrase of it, or the phrase carries a negation of its own."""
        negation = scopes.modifiers(span).get("negated")
        if negation is None:
            return False
        start, end = span
        return negation.start in saying.get(sid, ()) or any(t.category == "negated" and start <= t.start < end for t in scopes.triggers)

    def _vital_mentions(self, doc: Doc, vitals: list[Vital], scopes: ContextScopes, questions: set[int]) -> list[SymptomMention]:
        mentions = []
        for v in vitals:
            if not v.symptom or not v.assertion:
                continue
            span = doc.char_span(v.start, v.end, alignment_mode="expand")
            assertion = v.assertion
            if span is not None:
                # A reading inside a question is still a reading ("is 39.6 classed as high??");
                # only a hypothetical cue ("what if it reaches 39.5") makes it one: no `questions`.
                decided = self._context_assertion(scopes.modifiers((span.start, span.end)), span.start, doc, scopes, set(), v.symptom)
                if decided is not None:
                    assertion = decided[0]
            mentions.append(SymptomMention(v.symptom, assertion, v.text, v.start, v.end, "vital", v.evidence))
        return mentions

    def _reading_context(self, doc: Doc, v: Vital, scopes: ContextScopes) -> str:
        """Whether a reading is the patient's, now (see Findings.vital_contexts)."""
        span = doc.char_span(v.start, v.end, alignment_mode="expand")
        if span is None:
            return "measured"
        decided = self._context_assertion(scopes.modifiers((span.start, span.end)), span.start, doc, scopes, set(), v.symptom or "fever")
        return decided[0] if decided is not None and decided[0] in (HYPOTHETICAL, PAST, NOT_PATIENT) else "measured"

    def _semantic_mentions(
        self, doc: Doc, covered: list[tuple[int, int, str | None]], scopes: ContextScopes, questions: set[int], vitals: Sequence[Vital] = ()
    ) -> tuple[list[SymptomMention], list[Question], list[Question]]:
        """Clauses read by meaning (and, for the detector, each present clause's closest
        emergency). A clause the rules found nothing in is read whole; in one
        where they found something, each run of words they did not explain is read too ("fever 38.6
        and now a sharp stabbing pain in the middle of my chest"), and count only for another
        symptom, with confidence (no question)."""
        spans: list[tuple[int, int, str, frozenset[str] | None]] = []
        # Words of a context cue ("getting worse", "not", "last week") are explained too.
        cue_tokens = {i for t in scopes.triggers if t.category not in ("terminate", "pseudo") for i in range(t.start, t.end)}
        clauses = clause_spans(doc)
        for a, b in clauses:
            lo, hi = doc[a].idx, doc[b - 1].idx + len(doc[b - 1])
            inside = [(s, e, sid) for s, e, sid in covered if s < hi and lo < e]
            if not inside:
                if sum(1 for t in doc[a:b] if t.is_alpha) >= 2:
                    spans.append((a, b, doc[a:b].text, None))
                continue
            found = frozenset(sid for _, _, sid in inside if sid)
            run: list[Token] = []
            for t in [*doc[a:b], None]:
                explained = t is not None and (t.i in cue_tokens or any(s < t.idx + len(t) and t.idx < e for s, e, _ in inside))
                if t is not None and not explained:
                    run.append(t)
                    continue
                attached = bool(run) and run[0].i > a and run[0].lower_ in ATTACHED_WORDS  # "rash [on my chest and arms]"
                if not attached and sum(1 for r in run if r.is_alpha and not r.is_stop) >= REST_MIN_WORDS:
                    spans.append((a, b, "".join(r.text_with_ws for r in run).strip(), found))
                run = []
        if not spans:
            return [], [], []
        mentions, asks, candidates, readable = [], [], [], []
        assert self.semantic is not None  # the caller runs this only with a matcher
        detector = self.semantic.config.detector
        # A sentence with a reading is decided by the numbers for what they measure ("my pulse ox
        # reads 97%", "resting heart rate 64, lower than usual"), not by how its words sound.
        read = {
            (span.sent.start, sid)
            for v in vitals
            if (span := doc.char_span(v.start, v.end, alignment_mode="expand")) is not None
            for sid in self.semantic.config.measured.get(v.kind, ())
        }
        for (a, b, text, found_here), (score, description_negated) in zip(spans, self.semantic.score([s[2] for s in spans]), strict=True):
            partial = found_here is not None
            if (found_here is not None and score.symptom in found_here) or (doc[a].sent.start, score.symptom) in read:
                continue
            if self.semantic.config.says_as_usual(text):
                continue
            span = doc[a:b]
            assertion, experiencer, cue = self._assert_clause(a, b, doc, scopes, questions, description_negated)
            if (
                assertion == PRESENT
                and score.symptom not in self.rules.strangers_skip
                and (subject := self._relative_subject(doc, a, b)) is not None
            ):
                assertion, experiencer, cue = NOT_PATIENT, "other", subject.text
            if (
                self.detector is not None
                and assertion == PRESENT
                and not partial
                and not any(a <= t < b for t in scopes.therapy_starts)  # "Dad had his CAR-T on the 2nd" is context
                and not self.semantic.config.says_as_usual(text, detector.not_with)  # "speech is fine"
            ):
                readable += [
                    Question(sid, text, value, span.start_char, span.end_char)
                    for sid, value in score.emergencies
                    if value >= detector.candidate_from
                ]
            if score.hit and not (partial and score.score < self.semantic.config.partial_from):
                label = self.kb.symptoms[score.symptom].label
                evidence = f'said "{text}" ≈ {label} {score.score:.2f}'
                where = (span.start_char, span.end_char)
                mentions.append(SymptomMention(score.symptom, assertion, text, *where, "semantic", evidence, experiencer, cue, score.score))
            elif assertion == PRESENT and score.score > score.background:
                candidates.append(Question(score.symptom, text, score.score, span.start_char, span.end_char, score.clear))
                if score.ask and not partial:  # a partial read is never asked about, only corroborated
                    asks.append(candidates[-1])
        mentions += self._corroborated(doc, candidates, {m.symptom for m in mentions if m.assertion == PRESENT}, len(clauses))
        present = {m.symptom for m in mentions if m.assertion == PRESENT}
        return mentions, [q for q in asks if q.symptom not in present], readable

    def _doubted(self, doc: Doc, findings: Findings) -> bool:
        """A long message (`detector.doubt_clauses` clauses or more) says many ordinary things, and
        by chance one of its clauses reads near an emergency ("The kettle's just boiled" ≈
        confusion 0.61). When such reads are its only emergency evidence — no words the rules
        know, no reading — and the detector finds that the message as a whole does not read as
        an emergency (below `detector.doubt_below`), they become questions: the reply asks
        ("Is the person confused right now?"), names the emergency signs and 911, and a "yes"
        records the symptom. Never a message with a phrase or a number for an emergency.
        Whether it did so."""
        assert self.semantic is not None and self.detector is not None
        config = self.semantic.config.detector
        emergencies = [m for m in findings.mentions if m.assertion == PRESENT and m.symptom in self.semantic.emergency]
        if not config.doubt_below or not emergencies or any(m.source != "semantic" for m in emergencies):
            return False
        clauses = _clause_texts(doc)
        if len(clauses) < config.doubt_clauses:
            return False
        p = self.detector.probability(features(self.semantic, clauses, doc.text))
        if p >= (config.doubt_long_below if len(clauses) >= config.doubt_long_clauses else config.doubt_below):
            return False
        findings.mentions = [m for m in findings.mentions if m not in emergencies]
        asked = {q.symptom for q in findings.questions}
        for m in sorted(emergencies, key=lambda m: -m.score):
            if m.symptom not in asked:
                findings.questions.append(Question(m.symptom, m.text, m.score, m.start, m.end))
                asked.add(m.symptom)
        log.info("long message read as no emergency (%.2f): %d clause read(s) asked about instead", p, len(emergencies))
        return True

    def _detected(self, doc: Doc, findings: Findings, candidates: list[Question]) -> None:
        """The detector's second opinion (bot/nlu/detector.py): a message that reads as an
        emergency as a whole, where nothing said one for sure, records its closest present
        emergency candidate."""
        assert self.semantic is not None and self.detector is not None
        if any(m.assertion == PRESENT and m.symptom in self.semantic.emergency for m in findings.mentions):
            return
        if any(v.kind in self.semantic.config.measured for v in findings.vitals):
            return  # a message with readings is decided by its numbers, which an embedding cannot read ("sats 96, he's asleep")
        x = features(self.semantic, _clause_texts(doc), doc.text)
        p = self.detector.probability(x)
        if p < self.detector.fires_from:
            return
        kinds = self.detector.kind_probabilities(x)
        denied = {m.symptom for m in findings.mentions if m.assertion == ABSENT}  # "she isn't drowsy. She's lying in bed."
        floor = self.semantic.config.detector.kind_from
        candidates = [q for q in candidates if q.symptom not in denied and kinds.get(q.symptom, 1.0) >= floor]
        if not candidates:
            return
        best = max(candidates, key=lambda q: (kinds.get(q.symptom, 0.0), q.score))  # the likeliest kind, then its closest clause
        label = self.kb.symptoms[best.symptom].label
        like = f", most like {label} ({kinds[best.symptom]:.2f})" if best.symptom in kinds else ""
        evidence = f'the message reads as an emergency ({p:.2f}{like}); closest: said "{best.text}" ≈ {label} {best.score:.2f}'
        mention = SymptomMention(best.symptom, PRESENT, best.text, best.start, best.end, "semantic", evidence, "patient", "", best.score)
        findings.mentions.append(mention)
        findings.questions = [q for q in findings.questions if q.symptom != best.symptom]

    def _corroborated(self, doc: Doc, candidates: list[Question], found: set[str], clauses: int) -> list[SymptomMention]:
        """Emergency candidates the rest of the message backs (data/semantic.yml `corroboration`):
        several clauses in the question band pointing to it, or a cue such as "nobody is there"
        with a candidate from `cue_from` up."""
        assert self.semantic is not None
        config = self.semantic.config
        # Many clauses, many chances: in a long message two ordinary clauses near one emergency are
        # chance, not agreement; they are asked about instead (a cue still counts).
        agreeing = clauses < config.agreeing_below_clauses
        mentions = []
        for symptom in dict.fromkeys(q.symptom for q in candidates):
            if symptom in found or symptom not in self.semantic.emergency:
                continue
            mine = sorted((q for q in candidates if q.symptom == symptom), key=lambda q: -q.score)
            cue = config.corroborating_cue(symptom, doc.text)
            asked = [q for q in mine if q.clear and q.score >= config.ask_from_for(symptom)]
            if cue and mine[0].score >= config.cue_from:
                best, also = mine[0], f'with "{cue}"'
            elif agreeing and config.agreeing_clauses and len(asked) >= config.agreeing_clauses:
                best, also = asked[0], f"{len(asked)} clauses agreeing"
            elif (
                agreeing
                and config.agreeing_unsure
                and len(unsure := [q for q in mine if q.score >= config.ask_from_for(symptom)]) >= config.agreeing_unsure
            ):
                best, also = unsure[0], f"{len(unsure)} clauses agreeing"
            else:
                continue
            evidence = f'said "{best.text}" ≈ {self.kb.symptoms[symptom].label} {best.score:.2f}, {also}'
            mentions.append(
                SymptomMention(symptom, PRESENT, best.text, best.start, best.end, "semantic", evidence, "patient", "", best.score)
            )
        # Faces of one thing add up too: "keeps asking where the dog is" (confusion?) and "talks to
        # the wall" (hallucinations?) in one message are a brain that is not right.
        found = found | {m.symptom for m in mentions}
        for group, members in config.groups.items():
            if not agreeing or not config.group_agreeing or found & set(members):
                continue
            mine = sorted(
                (q for q in candidates if q.symptom in members and q.score >= config.ask_from_for(q.symptom)),
                key=lambda q: -q.score,
            )
            if len({(q.start, q.end) for q in mine}) >= config.group_agreeing:
                best = mine[0]
                others = ", ".join(sorted({self.kb.symptoms[q.symptom].label for q in mine[1:]}))
                evidence = f'said "{best.text}" ≈ {self.kb.symptoms[best.symptom].label} {best.score:.2f}, with {others} ({group})'
                mentions.append(
                    SymptomMention(best.symptom, PRESENT, best.text, best.start, best.end, "semantic", evidence, "patient", "", best.score)
                )
        return mentions

    def _assert_clause(
        self, a: int, b: int, doc: Doc, scopes: ContextScopes, questions: set[int], description_negated: bool
    ) -> tuple[str, str, str]:
        """The assertion of a whole clause: any trigger whose scope reaches into it counts.
        A negation agrees with a description that is itself negative ("can't get words out")."""
        mods = scopes.covering(a, b)
        experiencer = "other" if "experiencer" in mods else "patient"
        decided = self._context_assertion(mods, a, doc, scopes, questions)
        if decided is not None:
            return decided
        denial = scopes.clause_denial(a, b)
        if denial is not None and (not description_negated or doc[denial.start].lower_.strip(":- ") in self.rules.denial_words):
            return ABSENT, experiencer, doc[denial.start : denial.end].text
        return PRESENT, experiencer, ""

    def _reconcile(self, doc: Doc, mentions: list[SymptomMention], scopes: ContextScopes) -> list[SymptomMention]:
        """A measured temperature speaks for the vague fever words of its sentence, and a
        present higher symptom ("high_fever") replaces the one it subsumes ("fever"). A semantic
        read does not revive in its sentence a symptom a phrase there gives to someone else ("the
        lady next to me had a fit and it shook me up"). An episode the
        message closes is over: a later "no chills now", or a sentence that only says "it
        settled" after a dated one."""

        def sent_of(m: SymptomMention) -> int:
            span = doc.char_span(m.start, m.end, alignment_mode="expand")
            return span.sent.start if span is not None else -1

        elsewhere = {(m.symptom, sent_of(m)) for m in mentions if m.source == "phrase" and m.assertion == NOT_PATIENT}
        mentions = [m for m in mentions if not (m.source == "semantic" and m.assertion == PRESENT and (m.symptom, sent_of(m)) in elsewhere)]
        mentions = self._closed_episodes(doc, mentions, scopes, sent_of)
        measured = {sent_of(m) for m in mentions if m.source == "vital" and m.symptom in ("fever", "high_fever")}
        kept = [m for m in mentions if not (m.source == "phrase" and m.symptom == "fever" and sent_of(m) in measured)]
        present = {m.symptom for m in kept if m.assertion == PRESENT}
        kept = [m for m in kept if not self._gives_way(m, present)]
        subsumed = {sub for sid in present for sub in self.kb.symptoms[sid].subsumes}
        # last: a weak read is dropped only beside an emergency that survived everything above
        return self._beside_emergency([m for m in kept if not (m.symptom in subsumed and m.assertion == PRESENT)])

    def _gives_way(self, m: SymptomMention, present: set[str]) -> bool:
        """A phrase of one symptom said in words that belong to another present one
        (phrasings.yml `gives_way_to`: "shaking" beside a seizure is not chills)."""
        if m.source != "phrase" or m.assertion != PRESENT:
            return False
        words = set(m.text.lower().split())
        return any(other in present and words & said for other, said in self.kb.symptoms[m.symptom].gives_way_to.items())

    def _beside_emergency(self, mentions: list[SymptomMention]) -> list[SymptomMention]:
        """A message that already says an emergency for sure (in words, in numbers or by a
        close read) is an emergency whatever its other clauses sound like; a weak read of one
        of those ("spoon in hand" ≈ difficulty speaking) beside it adds a wrong reason, not
        safety, so it needs data/semantic.yml's `beside_emergency.read_from`."""
        config = self.semantic.config if self.semantic is not None else None
        if config is None or not config.beside_read_from:
            return mentions
        sure = [
            m
            for m in mentions
            if m.assertion == PRESENT and self.kb.symptoms[m.symptom].cls == "emergency" and m.score >= config.beside_sure_from
        ]

        def weak(m: SymptomMention) -> bool:
            return (
                m.source == "semantic"
                and m.assertion == PRESENT
                and m.score < config.beside_read_from
                and self.kb.symptoms[m.symptom].cls in config.beside_classes
                and any(o.symptom != m.symptom and o.score > m.score for o in sure)
            )

        return [m for m in mentions if not weak(m)]

    def _dated(self, sent: Span, scopes: ContextScopes) -> bool:
        """Whether this sentence puts its episode days or more back (a dated past cue or an anchor)
        and says nothing of today ("this morning", "an hour ago"): a therapy's date elsewhere in
        the message does not date the symptom."""
        text = sent.text.lower()
        if any(re.search(p, text) for p in self.rules.today_words):
            return False
        dated_cue = any(not t.rule.needs_date and sent.start <= t.start < sent.end for t in scopes.in_message("historical"))
        return dated_cue or any(re.search(p, text) for p in self.rules.past_anchors)

    def _closed_episodes(self, doc: Doc, mentions: list[SymptomMention], scopes: ContextScopes, sent_of) -> list[SymptomMention]:
        """Present mentions the rest of the message says are over. An emergency symptom is closed
        only when its own sentence dates the episode: "a seizure, no seizure now" stays present."""
        sents = list(doc.sents)

        def sent_span(m: SymptomMention) -> Span:
            return doc[doc.char_span(m.start, m.end, alignment_mode="expand").start].sent

        closed: dict[tuple[str, int], str] = {}  # (symptom, mention start) → cue
        # a later denial said of now: "the chills are gone completely, no chills now"
        for m in mentions:
            if m.assertion != ABSENT or m.source == "vital":
                # a normal reading after paracetamol is not "no fever now"
                continue
            if _says([t for t in sent_span(m) if not _onset_since(t)], self.rules.now_words):
                for p in mentions:
                    if p.symptom != m.symptom or p.assertion != PRESENT or p.end > m.start:
                        continue
                    # an emergency only when its own sentence is dated: "a seizure this morning, none now" stays
                    if self.kb.symptoms[p.symptom].cls == "emergency" and not self._dated(sent_span(p), scopes):
                        continue
                    closed[(p.symptom, p.start)] = m.cue or "denied now"
        # a sentence that only says it is over closes the dated sentence before it
        present_sents = {sent_of(m) for m in mentions}
        for i in range(1, len(sents)):
            cues = [t for t in scopes.in_message("historical") if sents[i].start <= t.start < sents[i].end and t.rule.closes]
            if not cues or sents[i].start in present_sents:
                continue
            before = sents[i - 1]
            if not self._dated(before, scopes):
                continue
            if not (self._over(cues[0], cues[0].start, doc, scopes) or self._said_over(doc, cues[0], before)):
                continue
            for p in mentions:
                if p.assertion == PRESENT and sent_of(p) == before.start:
                    closed[(p.symptom, p.start)] = doc[cues[0].start : cues[0].end].text
        return [replace(m, assertion=PAST, cue=closed[(m.symptom, m.start)]) if (m.symptom, m.start) in closed else m for m in mentions]

    def _said_over(self, doc: Doc, cue: Trigger, before: Span) -> bool:
        """A completion said in the past after a dated sentence told in the past: "Last month
        after my CAR-T I had a high fever. It all settled." Not one hoped for or to come ("it will
        settle", "hopefully it settled"), nor after a present ("now she is confused", "my speech
        is slurred")."""
        if not cue.rule.needs_date or not _past_verb(doc[cue.start]):
            return False
        lead = {t.lower_ for t in doc[max(doc[cue.start].sent.start, cue.start - 4) : cue.start]}
        present = re.search(
            r"\b(?:now|still|again|is|are|am|keeps?|cant|cannot)\b|n't\b|'(?:s|m|re)\b", before.text.lower().replace("’", "'")
        )
        return not lead & NOT_YET_WORDS and not present

    def _therapy_mentions(
        self, doc: Doc, matches: list[tuple[int, int, int]], scopes: ContextScopes, questions: set[int]
    ) -> list[TherapyMention]:
        spans = []
        for match_id, start, end in matches:
            kind, tid = doc.vocab.strings[match_id].split("|")
            spans.append((start, end, kind, tid))
        spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        # A therapy said to be not now in its own clause and close by (not started, cancelled,
        # stopped long ago: "my CAR-T isn't until March") is absent, unless its sentence dates it.
        not_now = [s for s, _, kind, _ in spans if kind == "not_now"]
        clause_of = {i: n for n, (a, b) in enumerate(clause_spans(doc)) for i in range(a, b)}
        taken: set[int] = set()
        found = []
        for start, end, kind, tid in spans:
            if not taken.isdisjoint(range(start, end)):
                continue
            taken.update(range(start, end))
            if kind == "not_now":
                continue
            span = doc[start:end]
            assertion, _, _ = self._assert((start, end), doc, scopes, questions, absent=False)
            when = _WHEN_RE.search(span.sent.text)
            if not when and any(clause_of.get(a) == clause_of.get(start) and abs(a - start) <= 8 for a in not_now):
                assertion = ABSENT
            if kind == "denial_only" and assertion != ABSENT:
                continue  # "my treatment" says nothing; "no treatment" does
            if kind == "therapy":
                t = self._therapy_names[tid]
                therapy_id, kind_id, name = t.id, t.kind, t.name
            elif kind == "kind":
                therapy_id, kind_id, name = None, tid, self.kb.therapy_kinds[tid].label
            else:
                therapy_id, kind_id, name = None, "denial_only", span.text
            found.append(
                TherapyMention(
                    therapy_id, kind_id, name, assertion, span.text, span.start_char, span.end_char, when.group(0) if when else None
                )
            )
        return sorted(found, key=lambda t: t.start)
