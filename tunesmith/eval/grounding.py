"""Content adherence: is what an answer *asserts* supported by the domain corpus?

An embedding topic score (tunesmith.eval.adherence.DomainClassifier) says whether an answer is
*about* the domain; a fluent invention about a domain product is on topic, and a question's own
words make nearly any answer look on topic. This module checks the answer's content instead:

1. **Claims.** The answer's content terms: lowercased word tokens minus English function words
   (CLAIM_STOPWORDS) and minus every term of the question, so that repeating the question never
   counts as saying something. A term is *specific* when it is a number (it has a digit) or a
   name (capitalised other than at the start of a sentence): dates, prices, people, products.
2. **Support.** The passages retrieved for the *question* (the project's Retriever, BM25 +
   embeddings by default, top `k`): a claim term is grounded when it occurs in them (after a light
   suffix stemming, so "launched" matches "launch"). The answer is never used as the query, so an
   invented value cannot retrieve its own support.
3. **Verdict.** The answer adheres when it grounds at least one term (it asserts something from
   the domain), every specific term is grounded (no invented number or name) and at least
   `min_grounded_share` of its claim terms are grounded (it does not drift into general-world
   content). A bare correct answer taken from the corpus adheres; a decline, an echo of the
   question, an invented date or a text on another subject does not.

Why our own code rather than an NLI or claim-extraction model: none ships offline on PyPI for
CPU use, and term support against retrieved passages is transparent (each verdict lists the
grounded and ungrounded terms) and validated against ground truth on the demo domain, where
every fact is known by construction (tunesmith.demo.adherence_truth; agreement in docs/demo.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunesmith.errors import TunesmithError

METHOD_VERSION = 1
DEFAULT_K = 2
MIN_GROUNDED_SHARE = 0.5
COMMON_DF = 0.25  # share of the corpus's documents above which a term is common to the domain

# English function words and question/answer boilerplate: they assert nothing about a domain.
CLAIM_STOPWORDS = frozenset("""
a about above after again against all almost also although am among an and another any anyone anything are around as
at be became because become been before being below between both but by can cannot could did do does doing done down
during each either else enough etc even ever every few for from further get gets got had has have having he her here
hers herself him himself his how however i if in into is it its itself just least less let like made make many may me
might more most much must my myself near neither no nor not now of off often on once one only onto or other others our
ours ourselves out over own per perhaps please quite rather really same say says said see seem seems shall she should
since so some something still such than that the their theirs them themselves then there these they this those though
through thus to together too toward towards under until up upon us use used very via was way we well were what whatever
when where whether which while who whom whose why will with within without would yes yet you your yours yourself
answer answers question questions called known named
""".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+(?:[.,]\d+)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|[\"'(\[]\s*)$")


def stem(term: str) -> str:
    """A light suffix stemmer (plural, -ed, -ing, possessive): 'launched' and 'launch' meet."""
    t = term.lower().strip(".,'-")
    if t.endswith("'s"):
        t = t[:-2]
    if any(c.isdigit() for c in t):
        return t.replace(",", "").rstrip(".")
    for suffix in ("ing", "ed", "es", "s"):
        if len(t) > len(suffix) + 3 and t.endswith(suffix):
            return t[: -len(suffix)]
    return t


_STOP_STEMS = frozenset(stem(w) for w in CLAIM_STOPWORDS) | {""}  # stemmed once, not per text


def terms(text: str) -> set[str]:
    """Stemmed content terms of a text (support side: everything that is not a function word)."""
    return {stem(m.group()) for m in _WORD.finditer(text)} - _STOP_STEMS


@dataclass
class Claim:
    term: str       # stemmed
    surface: str    # as written in the answer
    specific: bool  # a number or a name


def claims(answer: str, question: str = "") -> list[Claim]:
    """The answer's claim terms (see the module docstring), first occurrence of each, in order."""
    skip = terms(question) | _STOP_STEMS
    out: dict[str, Claim] = {}
    for m in _WORD.finditer(answer):
        word = m.group()
        t = stem(word)
        if not t or t in skip:
            continue
        number = any(c.isdigit() for c in word)
        name = word[0].isupper() and not _SENTENCE_START.search(answer[: m.start()])
        if t not in out:
            out[t] = Claim(t, word, number or name)
        elif number or name:
            out[t].specific = True
    return list(out.values())


def judge(answer: str, question: str, passages: list[str], *, min_grounded_share: float = MIN_GROUNDED_SHARE,
          common: frozenset[str] = frozenset()) -> dict:
    """One answer's verdict: {"adheres": 0|1, "grounded": [...], "ungrounded": [...], "why": str}.

    common: terms found in so many of the corpus's documents (the company's name, "launched",
    "manufactured") that finding them in the passages shows nothing about this question; they
    count as grounded but cannot be the one thing an answer asserts from the domain."""
    support = set().union(*(terms(p) for p in passages)) if passages else set()
    cs = claims(answer, question)
    grounded = [c.surface for c in cs if c.term in support]
    informative = [c for c in cs if c.term in support and c.term not in common]
    ungrounded = [c for c in cs if c.term not in support]
    invented = [c.surface for c in ungrounded if c.specific]
    share = len(grounded) / len(cs) if cs else 0.0
    if not cs:
        why = "asserts nothing beyond the question's own words"
    elif not grounded:
        why = "nothing it asserts is in the domain passages for this question"
    elif not informative:
        why = f"only words common to the whole corpus are in the passages ({', '.join(grounded)})"
    elif invented:
        why = f"names or numbers not in the domain passages: {', '.join(invented)}"
    elif share < min_grounded_share:
        why = f"only {share:.0%} of its content is in the domain passages"
    else:
        why = "what it asserts is in the domain passages"
    ok = bool(informative) and not invented and share >= min_grounded_share
    return {"adheres": int(ok), "grounded": grounded, "ungrounded": [c.surface for c in ungrounded], "why": why}


class ContentJudge:
    """Judges answers against passages retrieved from a domain corpus for each question."""

    def __init__(self, docs: list[dict], *, k: int = DEFAULT_K, method: str = "hybrid", embedder=None,
                 min_grounded_share: float = MIN_GROUNDED_SHARE):
        from tunesmith.retrieval import Retriever, chunk_documents

        if k < 1:
            raise TunesmithError(f"content adherence needs k >= 1 passages, got {k}")
        self.k, self.min_grounded_share = k, min_grounded_share
        self.retriever = Retriever(chunk_documents(docs), method=method, embedder=embedder)
        # Document frequency of each term: a term in more than COMMON_DF of the documents (and in
        # more than one) says nothing specific about the question it is found for.
        df: dict[str, int] = {}
        for d in docs:
            for t in terms(f"{d.get('title') or ''} {d['text']}"):
                df[t] = df.get(t, 0) + 1
        limit = max(1.0, COMMON_DF * len(docs))
        self.common = frozenset(t for t, n in df.items() if n > limit)

    def passages(self, questions: list[str]) -> list[list[str]]:
        return [[c.text for c, _ in hits] for hits in self.retriever.search(list(questions), k=self.k)]

    def judge_all(self, answers: list[str], questions: list[str]) -> list[dict]:
        if len(answers) != len(questions):
            raise TunesmithError(f"{len(questions)} questions for {len(answers)} answers")
        found = self.passages(questions) if questions else []
        return [judge(a, q, p, min_grounded_share=self.min_grounded_share, common=self.common)
                for a, q, p in zip(answers, questions, found)]

    def settings(self) -> dict:
        return {"method": "content grounding in retrieved passages", "version": METHOD_VERSION, "k": self.k,
                "retriever": self.retriever.method, "min_grounded_share": self.min_grounded_share, "common_df": COMMON_DF,
                "common_terms": len(self.common)}
