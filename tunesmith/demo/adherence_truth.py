"""Ground-truth labels for "domain adherence" on the demo domain, and agreement statistics.

The study scores whether a model's answer to an in-domain demo question *asserts only
domain facts*. The metric that scores it is written elsewhere; this module is the
reference it is validated against, so it deliberately knows nothing of that metric,
of the corpus text, of retrieval or of embeddings. It uses only what the demo
generator itself knows exactly: the fact table (``DemoDomain.facts``), the names of
the entities in it, the company name and the word pools in ``domain_words``. Because
every demo proper noun is invented and every answer is unique and substring-free,
those tables are enough to tell a true domain value from a false or an invented one.

Rules (``label_answer``), all matching case-insensitive and on whole words unless said:

1. The *asked entity* is the entity of the fact named by ``question_row["fact_id"]``.
   Its *true values* are the answers of all its facts (every attribute, not only the
   one asked) plus their aliases (the bare number of "472 crowns" / "332 employees").
2. Assertions are found in the answer in this order; a later kind never re-reads text
   an earlier one already claimed:
   a. every domain fact answer (of any entity), whitespace-flexible;
   b. every full domain entity name and the company name (these are *given*, not claims);
   c. every number (digit run; "1,986" and "472.00" are normalised to "1986", "472");
   d. every pool colour ("cobalt blue", "plum") and, left over, the hue word that ends a
      two-word pool colour ("blue", "grey"), in any case;
   e. every pool instrument ("barometer", "tide gauge"), in any case;
   f. every capitalised word that is a pool proper noun: first or last name, product
      stem, building stem, courier stem, or an invented town (town head + town tail,
      e.g. "Elvcombe"), wherever it stands. Proper-noun pools need the capital because
      some of them are ordinary English words in lower case ("brisk", "yarrow");
   g. every other capitalised word that does not start a sentence (start of the text, or
      after ``. ! ? :`` or a line break, ignoring opening quotes and brackets). The
      pronoun "I" (and "I'm", "I'd", ...) is not an assertion; a possessive "'s" is dropped.
3. Each assertion gets a status:
   - ``true``: it equals a true value or alias of the asked entity;
   - ``given``: an entity-name / company mention (2b), or text that occurs in the
     question, in the asked entity's name or in the company name (so repeating the
     question asserts nothing);
   - ``partial``: every word of it is a word of one true value of the asked entity
     ("Jessamine" for "Gunnel Jessamine", "yellow" for "lemon yellow"); consistent with
     the domain but not itself a fact value;
   - ``false``: a domain value or domain word that is not the asked entity's (another
     entity's launch year, another product's colour, a town that names another office);
   - ``invented``: anything else (a new person, number, place, general-world name).
4. The label is 1 iff at least one assertion is ``true`` and every assertion is
   ``true``, ``given`` or ``partial``; otherwise 0. Hence a decline or an echo of the
   question (no ``true`` assertion) is 0, a general-world answer is 0, and a correct
   value next to an invented date is 0.

Known limits, on purpose: lower-case general-world words ("made of gold") are not
assertions, and a capitalised word opening a sentence counts only if it is a pool word,
so "... 1986. Smith designed it." misses "Smith". Relations are not parsed: a true value
of the asked entity counts as true whatever the sentence says about it.

Also here: ``cohen_kappa`` and ``agreement`` for comparing a metric's 0/1 labels with
these labels (standard library only, independent of ``tunesmith.eval.stats``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from tunesmith.demo import domain_words as W
from tunesmith.demo.domain import COMPANY, DemoDomain

_OK = frozenset({"true", "given", "partial"})
_WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_END = ".!?:"
_OPENERS = "\"'“‘([{*-•#>"


def _phrase_regex(phrases: Iterable[str]) -> re.Pattern[str]:
    """One alternation over phrases, longest first, on word boundaries, any whitespace."""
    uniq = sorted({p.strip() for p in phrases if p.strip()}, key=len, reverse=True)
    if not uniq:
        return re.compile(r"(?!x)x")  # matches nothing
    alts = [r"\s+".join(re.escape(w) for w in p.split()) for p in uniq]
    return re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(alts) + r")(?![A-Za-z0-9])",
                      re.IGNORECASE)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def _norm_number(text: str) -> str:
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", text):
        text = text.replace(",", "")
    if re.fullmatch(r"\d+\.0+", text):
        text = text.split(".")[0]
    return text


def _alias(value: str) -> str | None:
    # Mirrors the demo's qa_test aliases: "472 crowns" may be answered "472".
    head, _, unit = value.partition(" ")
    return head if head.isdigit() and unit in ("crowns", "employees") else None


@dataclass
class _Index:
    """Everything the labeller needs from one domain, built once per domain."""
    entity_of: dict[str, str]            # fact_id -> entity
    values_of: dict[str, set[str]]       # entity -> normalised true values and aliases
    all_values: set[str]                 # every domain value and alias
    domain_words: set[str]               # words of every value and entity name
    value_re: re.Pattern[str]
    name_re: re.Pattern[str]
    colour_re: re.Pattern[str]
    instrument_re: re.Pattern[str]
    hues: set[str]
    proper: dict[str, str]               # lower-case pool proper noun -> pool kind


def _proper_nouns() -> dict[str, str]:
    kinds: dict[str, str] = {}
    # Later pools win on a clash; the kind is only a label for explain().
    for kind, pool in (("first_name", W.FIRST_NAMES), ("last_name", W.LAST_NAMES),
                       ("product_stem", W.PRODUCT_STEMS), ("building_stem", W.BUILDING_STEMS),
                       ("courier_stem", W.COURIER_STEMS)):
        kinds.update({w.lower(): kind for w in pool})
    kinds.update({(h + t).lower(): "town" for h in W.TOWN_HEADS for t in W.TOWN_TAILS})
    return kinds


def build_index(domain: DemoDomain) -> _Index:
    """Index the domain's fact table and the word pools (reuse it across many answers)."""
    values_of: dict[str, set[str]] = {}
    for f in domain.facts:
        vals = values_of.setdefault(f.entity, set())
        vals.add(_norm(f.answer))
        alias = _alias(f.answer)
        if alias:
            vals.add(alias)
    entities = {f.entity for f in domain.facts}
    all_values = set().union(*values_of.values()) if values_of else set()
    dwords = set().union(*(_words(t) for t in all_values | entities)) if entities else set()
    return _Index(
        entity_of={f.fact_id: f.entity for f in domain.facts},
        values_of=values_of, all_values=all_values, domain_words=dwords,
        value_re=_phrase_regex(f.answer for f in domain.facts),
        name_re=_phrase_regex(list(entities) + [COMPANY]),
        colour_re=_phrase_regex(W.COLOURS),
        instrument_re=_phrase_regex(W.INSTRUMENTS),
        hues={c.split()[-1] for c in W.COLOURS if " " in c},
        proper=_proper_nouns(),
    )


def _sentence_start(text: str, pos: int) -> bool:
    before = text[:pos]
    stripped = before.rstrip(" \t\r\n" + _OPENERS)
    gap = before[len(stripped):]
    return not stripped or "\n" in gap or stripped[-1] in _SENTENCE_END


class _Claims:
    """Character spans already taken by an assertion, so no text is read twice."""

    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []

    def take(self, start: int, end: int) -> bool:
        if any(start < e and s < end for s, e in self.spans):
            return False
        self.spans.append((start, end))
        return True


def _status(text: str, true_vals: set[str], given_text: str, idx: _Index) -> str:
    """Status of one assertion (rule 3); ``text`` is already normalised."""
    if text in true_vals:
        return "true"
    if re.search(r"(?<![a-z0-9])" + re.escape(text) + r"(?![a-z0-9])", given_text):
        return "given"
    if text in idx.all_values:
        return "false"
    words = _words(text)
    # Only digit-free text can be partial: "563 crowns" shares "crowns" with "472 crowns".
    if words and not any(c.isdigit() for c in text) and any(
            words <= _words(v) for v in true_vals):
        return "partial"
    if words and words <= idx.domain_words:
        return "false"
    return "invented"


def _phrase_assertions(answer: str, claims: _Claims, idx: _Index) -> list[tuple[str, str, int]]:
    """Rules 2a-2e: (text, kind, start) for values, names, numbers, colours, instruments."""
    found: list[tuple[str, str, int]] = []
    for kind, pattern in (("fact_value", idx.value_re), ("entity_name", idx.name_re),
                          ("number", _NUMBER), ("colour", idx.colour_re),
                          ("instrument", idx.instrument_re)):
        for m in pattern.finditer(answer):
            if claims.take(m.start(), m.end()):
                text = _norm_number(m.group()) if kind == "number" else _norm(m.group())
                found.append((text, kind, m.start()))
    for m in _WORD.finditer(answer):  # hue words left over from 2d
        if m.group().lower() in idx.hues and claims.take(m.start(), m.end()):
            found.append((m.group().lower(), "colour", m.start()))
    return found


def _word_assertions(answer: str, claims: _Claims, idx: _Index) -> list[tuple[str, str, int]]:
    """Rules 2f-2g: capitalised pool proper nouns anywhere, other capitals mid-sentence."""
    found: list[tuple[str, str, int]] = []
    for m in _WORD.finditer(answer):
        word = re.sub(r"['’]s$", "", m.group())
        if not word[0].isupper() or re.split(r"['’]", word)[0] == "I":
            continue
        kind = idx.proper.get(word.lower())
        if kind is None:
            if _sentence_start(answer, m.start()):
                continue
            kind = "capitalised"
        if claims.take(m.start(), m.end()):
            found.append((word.lower(), kind, m.start()))
    return found


def _explain(answer: str, question_row: dict, idx: _Index) -> list[dict]:
    entity = idx.entity_of.get(question_row["fact_id"])
    if entity is None:
        raise KeyError(f"fact_id {question_row['fact_id']!r} is not in the domain's fact table")
    true_vals = idx.values_of[entity]
    given_text = "\n".join([_norm(question_row.get("prompt", "")), _norm(entity), _norm(COMPANY)])
    claims = _Claims()
    found = _phrase_assertions(answer, claims, idx) + _word_assertions(answer, claims, idx)
    out = []
    for text, kind, start in sorted(found, key=lambda t: t[2]):
        status = "given" if kind == "entity_name" else _status(text, true_vals, given_text, idx)
        out.append({"text": text, "kind": kind, "status": status, "start": start})
    return out


def explain(answer: str, question_row: dict, domain: DemoDomain) -> list[dict]:
    """The assertions found in ``answer``, in order: {"text", "kind", "status", "start"}."""
    return _explain(answer, question_row, build_index(domain))


def _label(assertions: list[dict]) -> int:
    statuses = [a["status"] for a in assertions]
    return int("true" in statuses and all(s in _OK for s in statuses))


def label_answer(answer: str, question_row: dict, domain: DemoDomain) -> int:
    """1 if ``answer`` asserts only domain facts of the asked entity (module rules), else 0."""
    return _label(explain(answer, question_row, domain))


def label_answers(answers: Sequence[str], rows: Sequence[dict], domain: DemoDomain) -> list[int]:
    """``label_answer`` for each (answer, row) pair; the domain is indexed once."""
    if len(answers) != len(rows):
        raise ValueError(f"{len(answers)} answers but {len(rows)} question rows")
    idx = build_index(domain)
    return [_label(_explain(a, r, idx)) for a, r in zip(answers, rows)]


# --------------------------------------------------------------------------- agreement

def _check_binary(a: Sequence[int], b: Sequence[int]) -> None:
    if len(a) != len(b):
        raise ValueError(f"label lists differ in length: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no labels to compare")
    if any(x not in (0, 1) for x in list(a) + list(b)):
        raise ValueError("labels must be 0 or 1")


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Cohen's kappa of two binary raters: (p_o - p_e) / (1 - p_e).

    Undefined (NaN) when chance agreement is 1, i.e. both raters give one and the
    same label to every item: there is no variation for agreement to explain.
    """
    _check_binary(a, b)
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    pa1, pb1 = sum(a) / n, sum(b) / n
    p_e = pa1 * pb1 + (1 - pa1) * (1 - pb1)
    if math.isclose(p_e, 1.0):
        return float("nan")
    return (p_o - p_e) / (1 - p_e)


def agreement(metric: Sequence[int], truth: Sequence[int]) -> dict:
    """Accuracy, kappa, n and the confusion counts of metric labels against truth (1 = positive)."""
    _check_binary(metric, truth)
    pairs = list(zip(metric, truth))
    tp = sum(m == 1 and t == 1 for m, t in pairs)
    fp = sum(m == 1 and t == 0 for m, t in pairs)
    fn = sum(m == 0 and t == 1 for m, t in pairs)
    tn = sum(m == 0 and t == 0 for m, t in pairs)
    return {"n": len(pairs), "accuracy": (tp + tn) / len(pairs),
            "kappa": cohen_kappa(metric, truth), "tp": tp, "fp": fp, "fn": fn, "tn": tn}
