"""A spaCy component that writes a matching form into `Token.norm_`.

Patients type "cant catch my breth", "v weak", "feaver". Before any pattern matches, each token's
NORM becomes: shorthand expanded ("v" → "very") → spelling corrected against the words the
knowledge base uses (only for words that are not known English, so "couch" stays "couch") →
lemmatised ("coughing" → "cough"). Patterns are compiled through the same function, so both
sides always agree.
"""

from collections.abc import Iterable
from functools import lru_cache

from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein
from spacy.language import Language
from spacy.tokens import Doc

from bot.nlu.lexicon import known_words, lemma_table

# The spelling-corrected word before lemmatising goes into `Token.lemma_`: prefix patterns
# ("tired*") match on it too. The blank pipeline has no lemmatiser, so the slot is free, and the
# Matcher reads LEMMA natively; a custom `Token._` attribute cost a Python object per token and
# per pattern check, a quarter of the extractor's time.
# Shortest word the spelling corrector touches; below it, a one-letter slip is too ambiguous.
MIN_CORRECT_LEN = 4


class Normalizer:
    """Maps a lower-cased token to its matching form (see module docstring)."""

    def __init__(self, vocabulary: Iterable[str], shorthand: dict[str, str], protected: Iterable[str]) -> None:
        self.shorthand = dict(shorthand)
        self.vocabulary = sorted({w for w in vocabulary if w.isalpha() and len(w) >= MIN_CORRECT_LEN})
        self.known = known_words() | frozenset(protected)
        self.lemmas = lemma_table()
        self._cached = lru_cache(maxsize=65536)(self._norm)

    def correct(self, word: str) -> str:
        """The knowledge-base word `word` is a misspelling of, or `word` itself."""
        if len(word) < MIN_CORRECT_LEN or not word.isalpha() or word in self.known:
            return word
        limit = 1 if len(word) <= 6 else 2
        best = process.extractOne(word, self.vocabulary, scorer=DamerauLevenshtein.distance, score_cutoff=limit)
        return best[0] if best else word

    def _norm(self, lower: str) -> tuple[str, str]:
        word = self.correct(self.shorthand.get(lower, lower))
        return word, self.lemmas.get(word, word)

    def __call__(self, lower: str) -> tuple[str, str]:
        """(corrected word, its lemma)."""
        return self._cached(lower)


class NormalizerComponent:
    """spaCy pipe: sets NORM on every token with a `Normalizer`."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer

    def __call__(self, doc: Doc) -> Doc:
        for token in doc:
            # spaCy's own NORM already maps "ca"→"can", "n't"→"not", "'m"→"am".
            token.lemma_, token.norm_ = self.normalizer(token.norm_)
        return doc


@Language.factory("crs_normalizer", default_config={"knowledge_base": "", "language_rules": ""})
def make_normalizer(nlp: Language, name: str, knowledge_base: str, language_rules: str) -> NormalizerComponent:
    """Factory with a JSON-safe config: empty paths mean the project's defaults."""
    from bot.clinical.knowledge import load_knowledge_base, load_language_rules
    from bot.nlu.pipeline import vocabulary

    kb = load_knowledge_base(knowledge_base or None)
    rules = load_language_rules(language_rules or None)
    return NormalizerComponent(Normalizer(vocabulary(kb, rules), rules.shorthand, rules.protected_words))
