"""Build the spaCy pipeline and matchers from the knowledge base and language rules.

spaCy's pretrained pipelines cannot be downloaded here, and symptom vocabulary is a closed,
clinician-owned list anyway: so `spacy.blank("en")` (tokenizer), a sentencizer, our normaliser,
and Matchers compiled from data/phrasings.yml and data/language.yml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import spacy
from spacy.language import Language
from spacy.matcher import Matcher
from spacy.symbols import ORTH

import bot.nlu.normalizer  # noqa: F401  (registers the crs_normalizer factory)
from bot.clinical.knowledge import KnowledgeBase, LanguageRules
from bot.nlu.patterns import compile_phrase

SENTENCE_PUNCT = [".", "!", "?", "\n", "\n\n", ";"]


@dataclass
class CompiledRules:
    nlp: Language
    symptoms: Matcher  # labels "symptom_id|present" / "symptom_id|absent"
    therapies: Matcher  # labels "therapy|<id>", "kind|<kind>", "denial_only|-"
    context: Matcher  # labels "<index into rules>"
    present_cues: Matcher


def vocabulary(kb: KnowledgeBase, rules: LanguageRules) -> set[str]:
    texts: list[str] = []
    for s in kb.symptoms.values():
        texts.extend(s.phrases + s.absent + s.not_when)
    for t in kb.therapies:
        texts.extend(t.names)
    for k in kb.therapy_kinds.values():
        texts.extend(k.names)
    texts.extend(kb.therapy_denial_only + kb.therapy_not_now)
    texts.extend(r.literal for r in rules.context_rules)
    texts.extend(rules.shorthand.values())
    return {w for text in texts for w in re.findall(r"[a-z]+", text.lower())}


def _shouted_contractions(nlp: Language) -> None:
    """spaCy splits "cant" and "Cant" into "ca" + "nt" but not "CANT": a patient writing in
    capitals ("HE CANT BREATHE", "I DONT HAVE A FEVER") would lose the negation. Add the
    all-capitals form of every contraction the tokenizer knows."""
    for key, pieces in list(nlp.tokenizer.rules.items()):
        upper = key.upper()
        if key == upper or upper in nlp.tokenizer.rules or not re.fullmatch(r"[a-z']+", key):
            continue
        if "".join(p[ORTH] for p in pieces) != key:
            continue
        nlp.tokenizer.add_special_case(upper, [{**p, ORTH: p[ORTH].upper()} for p in pieces])


def build_pipeline(kb: KnowledgeBase, rules: LanguageRules) -> CompiledRules:
    nlp = spacy.blank("en")
    _shouted_contractions(nlp)
    nlp.add_pipe("sentencizer", config={"punct_chars": SENTENCE_PUNCT})
    nlp.add_pipe("crs_normalizer", config={"knowledge_base": str(kb.path), "language_rules": str(rules.path)})

    def tokenize(text: str) -> list[str]:
        return [t.norm_ for t in nlp(text) if not t.is_space]

    symptoms = Matcher(nlp.vocab, validate=True)
    for s in kb.symptoms.values():
        for label, phrases in ((f"{s.id}|present", s.phrases), (f"{s.id}|absent", s.absent), (f"{s.id}|not_when", s.not_when)):
            for phrase in phrases:
                symptoms.add(label, compile_phrase(phrase, tokenize))
    therapies = Matcher(nlp.vocab, validate=True)
    for t in kb.therapies:
        for name in t.names:
            therapies.add(f"therapy|{t.id}", [[{"NORM": n} for n in tokenize(name)]])
    for k in kb.therapy_kinds.values():
        for name in k.names:
            therapies.add(f"kind|{k.id}", [[{"NORM": n} for n in tokenize(name)]])
    for word in kb.therapy_denial_only:
        therapies.add("denial_only|-", [[{"NORM": n} for n in tokenize(word)]])
    for phrase in kb.therapy_not_now:
        therapies.add("not_now|-", compile_phrase(phrase, tokenize))
    context = Matcher(nlp.vocab, validate=True)
    for i, rule in enumerate(rules.context_rules):
        context.add(str(i), compile_phrase(rule.literal, tokenize))
    present_cues = Matcher(nlp.vocab, validate=True)
    for cue in rules.question_present_cues:
        present_cues.add("cue", compile_phrase(cue, tokenize))
    return CompiledRules(nlp, symptoms, therapies, context, present_cues)
