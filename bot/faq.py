"""The offline `faq` backend: answers from prompts/faq.yaml by TF-IDF similarity, typo-tolerant."""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bot.clients.llm import Completion
from prompts import FaqEntry, Prompts

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "is",
        "are",
        "was",
        "be",
        "to",
        "of",
        "in",
        "on",
        "at",
        "for",
        "and",
        "or",
        "it",
        "do",
        "does",
        "did",
        "can",
        "could",
        "how",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
        "this",
        "that",
        "there",
        "please",
        "would",
        "like",
        "want",
        "need",
        "have",
        "has",
        "im",
    ]
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def tokens(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


class FaqMatcher:
    """Cosine similarity of TF-IDF vectors; keywords count double; unknown words snap to close ones."""

    def __init__(self, entries: Sequence[FaqEntry], threshold: float = 0.2) -> None:
        self.entries = list(entries)
        self.threshold = threshold
        docs = [
            Counter(tokens(e.question)) + Counter({t: 2 for t in tokens(" ".join(e.keywords))})
            for e in entries
        ]
        df = Counter(t for doc in docs for t in doc)
        n = len(docs)
        self._idf = {t: math.log((1 + n) / (1 + c)) + 1 for t, c in df.items()}
        self._vectors = [self._weigh(doc) for doc in docs]
        self._vocab = sorted(self._idf)

    def _weigh(self, counts: Counter[str]) -> dict[str, float]:
        vec = {t: c * self._idf.get(t, 0.0) for t, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items()}

    def _snap(self, word: str) -> str:
        if word in self._idf or len(word) < 4:
            return word
        close = difflib.get_close_matches(word, self._vocab, n=1, cutoff=0.8)
        return close[0] if close else word

    def best(self, text: str) -> tuple[FaqEntry | None, float]:
        query = self._weigh(Counter(self._snap(t) for t in tokens(text)))
        scored = [
            (sum(w * vec.get(t, 0.0) for t, w in query.items()), i) for i, vec in enumerate(self._vectors)
        ]
        if not scored:
            return None, 0.0
        score, index = max(scored)
        return (self.entries[index], score) if score >= self.threshold else (None, score)


class FaqResponder:
    """Answers the newest user messages from the FAQ; tools are not offered to it."""

    supports_tools = False

    def __init__(self, prompts: Prompts) -> None:
        self._matcher = FaqMatcher(prompts.faq)
        self._fallback = prompts.text("faq_fallback")

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], user: str
    ) -> Completion:
        burst: list[str] = []
        for message in reversed(messages):
            if message["role"] != "user":
                break
            burst.insert(0, str(message["content"]))
        entry, _ = self._matcher.best(" ".join(burst))
        return Completion(text=entry.answer if entry else self._fallback, tool_calls=[], tokens=0)
