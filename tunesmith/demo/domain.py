"""Deterministic demo domain: an invented instrument maker, its documents and its datasets.

The quickstart and the comparative study need a domain that the default model
(SmolLM2-135M-Instruct) cannot already know, small enough to learn with LoRA in a
few minutes on CPU. This module invents one from a seed: the company
``COMPANY``, its products and offices, ~80 short-answer facts about them, a prose
corpus stating each fact in exactly one document, QA train/test splits (the test
split uses a question phrasing held out from training), out-of-domain general
questions, preference pairs and a four-label customer-message classification set.

Everything is driven by one ``random.Random(seed)`` and ordered tuples, so the same
seed gives byte-identical files in any process. Standard library only.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from tunesmith.atomic import write_text_atomic
from tunesmith.demo import domain_words as W

COMPANY = "Tarrowind Instruments"
SYSTEM_PROMPT = (
    f"You are the help desk of {COMPANY} and you answer each question about the "
    "company with only the short answer."
)
LABELS: tuple[str, ...] = ("billing", "shipping", "technical", "returns")
CLS_TRAIN_PER_LABEL = 80
CLS_TEST_PER_LABEL = 30
# Colour and year pools bound how many entities can get distinct answers.
MAX_FACTS = 160
_MIN_ENTITIES = 16  # classification messages want a varied set of names even for tiny worlds
_MIN_DOC_WORDS = 100

FILE_NAMES: tuple[str, ...] = (
    "corpus", "qa_train", "qa_test", "ood", "ood_train", "pref_train", "pref_test",
    "cls_train", "cls_test", "facts",
)


@dataclass(frozen=True)
class Fact:
    fact_id: str
    entity: str
    attribute: str
    answer: str
    doc_id: str


@dataclass
class DemoDomain:
    seed: int
    facts: list[Fact]
    corpus: list[dict]        # {"id", "title", "text"}
    qa_train: list[dict]      # {"prompt", "completion", "fact_id"}
    qa_test: list[dict]       # {"prompt", "answer", "aliases": [..], "fact_id", "doc_id"}
    ood: list[dict]           # {"prompt", "answer"}: held out, scores the out-of-domain policy
    ood_train: list[dict]     # {"prompt", "answer"}: other general questions, to teach the policy
    pref_train: list[dict]    # {"prompt", "chosen", "rejected", "fact_id"}
    pref_test: list[dict]     # same
    cls_train: list[dict]     # {"text", "label"}
    cls_test: list[dict]      # {"text", "label"}


# --------------------------------------------------------------------------- attributes

def _price(r: random.Random) -> str:
    return f"{r.randint(110, 990)} crowns"


def _year(r: random.Random) -> str:
    return str(r.randint(1931, 2019))


def _colour(r: random.Random) -> str:
    return r.choice(W.COLOURS)


def _person(r: random.Random) -> str:
    return f"{r.choice(W.FIRST_NAMES)} {r.choice(W.LAST_NAMES)}"


def _town(r: random.Random) -> str:
    return r.choice(W.TOWN_HEADS) + r.choice(W.TOWN_TAILS)


def _headcount(r: random.Random) -> str:
    return f"{r.randint(12, 480)} employees"


def _building(r: random.Random) -> str:
    return f"{r.choice(W.BUILDING_STEMS)} {r.choice(W.BUILDING_KINDS)}"


def _courier(r: random.Random) -> str:
    return f"{r.choice(W.COURIER_STEMS)} {r.choice(W.COURIER_KINDS)}"


@dataclass(frozen=True)
class _Attr:
    """One askable attribute: how to invent its value, ask about it and state it."""
    name: str
    group: int                      # which of the entity's two documents states it
    make: Callable[[random.Random], str]
    train: tuple[str, str, str]     # phrasings used for training ({e} = entity)
    held_out: str                   # phrasing reserved for the test split
    sentences: tuple[str, ...]      # corpus phrasings ({e}, {a} = answer, {c} = company)


_PRODUCT_ATTRS: tuple[_Attr, ...] = (
    _Attr("price", 0, _price,
          ("How much does the {e} cost?", "What is the price of the {e}?",
           "What does {c} charge for the {e}?"),
          "How much money do you need to buy the {e}?",
          ("The {e} sells for {a} in {c} shops.",
           "A new {e} costs {a}, and the price has not changed for years.")),
    _Attr("launch_year", 0, _year,
          ("In what year was the {e} launched?", "When was the {e} first released?",
           "What year did the {e} go on sale?"),
          "The {e} came out in which year?",
          ("The {e} was launched in {a}.", "{c} first released the {e} in {a}.")),
    _Attr("colour", 0, _colour,
          ("What colour is the {e}?", "What colour is the casing of the {e}?",
           "In which colour is the {e} sold?"),
          "Which colour does the {e} come in?",
          ("The casing of every {e} is finished in {a}.",
           "The {e} is only ever sold with a casing painted {a}.")),
    _Attr("designer", 1, _person,
          ("Who designed the {e}?", "Who is the designer of the {e}?",
           "Which engineer designed the {e}?"),
          "The {e} was designed by whom?",
          ("The {e} was designed by {a}.", "{a} is the engineer who designed the {e}.")),
    _Attr("factory_town", 1, _town,
          ("Where is the {e} manufactured?", "In which town is the {e} made?",
           "Which town's factory builds the {e}?"),
          "Where is the factory that produces the {e}?",
          ("Each {e} is built at the company factory in {a}.",
           "The {e} is manufactured in the town of {a}.")),
)

_OFFICE_ATTRS: tuple[_Attr, ...] = (
    _Attr("manager", 0, _person,
          ("Who manages the {e}?", "Who is the manager of the {e}?", "Who runs the {e}?"),
          "Who is in charge of the {e}?",
          ("The {e} is managed by {a}.", "{a} runs the {e} and reports to the board.")),
    _Attr("opening_year", 0, _year,
          ("In what year did the {e} open?", "When was the {e} opened?",
           "What year was the {e} founded?"),
          "The {e} first opened its doors in which year?",
          ("The {e} opened in {a}.", "{c} opened the {e} in {a}.")),
    _Attr("headcount", 0, _headcount,
          ("How many people work at the {e}?", "How many employees does the {e} have?",
           "What is the headcount of the {e}?"),
          "How large is the staff of the {e}?",
          ("Today the {e} has {a} on its payroll.",
           "The headcount at the {e} stands at {a}.")),
    _Attr("building", 1, _building,
          ("What building houses the {e}?", "In which building is the {e} located?",
           "What is the name of the building of the {e}?"),
          "Which building is home to the {e}?",
          ("The {e} is housed in {a}.", "Visitors to the {e} will find it inside {a}.")),
    _Attr("courier", 1, _courier,
          ("Which courier does the {e} use?", "What courier company ships for the {e}?",
           "Who handles deliveries for the {e}?"),
          "Which delivery firm serves the {e}?",
          ("All parcels from the {e} are shipped with {a}.",
           "The {e} uses {a} for every delivery.")),
)

_ATTRS = {"product": _PRODUCT_ATTRS, "office": _OFFICE_ATTRS}

# ------------------------------------------------------------------------ corpus prose

# Document titles and opening sentences, by (entity kind, document group).
_TITLES = {("product", 0): "Introducing the {e}", ("product", 1): "How the {e} is made",
           ("office", 0): "Profile of the {e}", ("office", 1): "Day-to-day at the {e}"}
_INTROS = {
    ("product", 0): "{c} makes the {e}, one of the instruments in its current catalogue.",
    ("product", 1): "This profile looks at how {c} designs and builds the {e}.",
    ("office", 0): "The {e} is one of the regional offices of {c}.",
    ("office", 1): "This page describes daily operations at the {e} of {c}.",
}
# Filler states no testable fact (no names, numbers or colours), so that retrieval and
# continued pre-training see natural prose rather than a bare fact list.
_FILLERS = {
    ("product", 0): (
        "Reviewers have praised its steady needle and quiet mechanism.",
        "The instrument ships in a padded wooden box with a printed manual.",
        "Field surveyors and hobbyists alike keep one on their workbench.",
        "Its dial is engraved by hand and checked twice before packing.",
        "Spare parts remain available through the usual service desk.",
        "Many buyers say it is the most reliable instrument they have owned.",
        "Each unit is tested in a cold room and a warm room before it is passed.",
    ),
    ("product", 1): (
        "The workshop floor is kept quiet so that fitters can concentrate.",
        "Brass fittings are polished by hand before assembly begins.",
        "Apprentices learn the trade by working beside senior fitters.",
        "Early sketches of the instrument still hang in the drawing office.",
        "The glass for each dial is cut and ground on site.",
        "Quality inspectors sign a small card that travels with every unit.",
        "Offcuts of timber and metal are collected and reused wherever possible.",
    ),
    ("office", 0): (
        "The office handles orders, repairs and customer visits for the surrounding region.",
        "Staff meet every morning to review the day's deliveries.",
        "A small museum corner displays instruments from the company's early days.",
        "New employees spend their first week shadowing experienced colleagues.",
        "The kitchen is stocked with tea, biscuits and a temperamental kettle.",
        "Local schools sometimes visit to see how precision instruments work.",
        "The office keeps a lending library of technical books for its staff.",
    ),
    ("office", 1): (
        "Parcels are packed in recycled paper and sealed with the company stamp.",
        "A noticeboard by the entrance lists upcoming training sessions.",
        "Visitors sign in at the front desk and receive a paper badge.",
        "Meeting rooms are named after famous storms of the past.",
        "The building has a small garden where staff eat lunch in summer.",
        "Fragile instruments are wrapped twice before they leave the dock.",
        "The loading bay is busiest on the last afternoon of each week.",
    ),
}
_GENERAL_FILLERS: tuple[str, ...] = (
    "{c} has built precision instruments for several generations.",
    "The company prefers slow, careful work to fast growth.",
    "Customers can write to the help desk with any question about their purchase.",
    "Every instrument carries a small engraved maker's mark on its base.",
    "The company newsletter reports on new instruments each season.",
    "Repairs are carried out by the same teams who build the instruments.",
)


def _static_text() -> str:
    """All fixed prose the generator can emit; answers must never occur inside it."""
    parts: list[str] = [COMPANY]
    for attrs in _ATTRS.values():
        for a in attrs:
            parts.extend(a.train)
            parts.append(a.held_out)
            parts.extend(a.sentences)
    parts.extend(_TITLES.values())
    parts.extend(_INTROS.values())
    for fillers in _FILLERS.values():
        parts.extend(fillers)
    parts.extend(_GENERAL_FILLERS)
    return "\n".join(parts).lower()


class _Picker:
    """Draws names and answers that are unique and never substrings of one another.

    Substring-freedom is what makes exact match and "answer appears in text" checks
    unambiguous: no answer can hide inside an entity name, another answer or fixed prose.
    """

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.static = _static_text()
        self.used: list[str] = [COMPANY.lower()]

    def clashes(self, value: str) -> bool:
        low = value.lower()
        return low in self.static or any(low in u or u in low for u in self.used)

    def draw(self, make: Callable[[random.Random], str]) -> str:
        for _ in range(5000):
            value = make(self.rng)
            if not self.clashes(value):
                self.used.append(value.lower())
                return value
        raise ValueError("word pools exhausted; lower n_facts")


# ---------------------------------------------------------------------------- builders

def _entity_kind(i: int) -> str:
    # 3 offices in every 8 entities gives 10 products and 6 offices for 80 facts.
    return "office" if i % 8 in (2, 5, 7) else "product"


def _make_entities(picker: _Picker, n_entities: int) -> list[tuple[str, str]]:
    """Return (kind, name) pairs, e.g. ("product", "Orvell barometer")."""
    entities: list[tuple[str, str]] = []
    for i in range(n_entities):
        if _entity_kind(i) == "office":
            entities.append(("office", picker.draw(_town) + " office"))
        else:
            stem = picker.draw(lambda r: r.choice(W.PRODUCT_STEMS))
            instrument = picker.rng.choice(W.INSTRUMENTS)
            entities.append(("product", f"{stem} {instrument}"))
    return entities


def _make_facts(picker: _Picker, entities: list[tuple[str, str]],
                n_facts: int) -> list[tuple[Fact, str, _Attr]]:
    """Invent answers; return (fact without doc_id yet, entity kind, attribute spec)."""
    out: list[tuple[Fact, str, _Attr]] = []
    for kind, name in entities:
        for attr in _ATTRS[kind]:
            if len(out) == n_facts:
                return out
            fid = f"fact-{len(out) + 1:03d}"
            out.append((Fact(fid, name, attr.name, picker.draw(attr.make), ""), kind, attr))
    return out


def _fill(template: str, entity: str = "", answer: str = "") -> str:
    return template.format(e=entity, a=answer, c=COMPANY)


def _make_corpus(rng: random.Random, drafts: list[tuple[Fact, str, _Attr]]
                 ) -> tuple[list[dict], list[Fact]]:
    """One document per (entity, group) holding facts; returns docs and facts with doc_id."""
    groups: dict[tuple[str, int], list[tuple[Fact, str, _Attr]]] = {}
    for draft in drafts:  # dicts keep insertion order, so doc order follows fact order
        groups.setdefault((draft[0].entity, draft[2].group), []).append(draft)
    corpus: list[dict] = []
    facts: list[Fact] = []
    for (entity, group), members in groups.items():
        doc_id = f"doc-{len(corpus) + 1:03d}"
        key = (members[0][1], group)
        stated = [_fill(rng.choice(a.sentences), entity, f.answer) for f, _, a in members]
        pool = list(_FILLERS[key]) + [_fill(s) for s in _GENERAL_FILLERS]
        rng.shuffle(pool)
        body = stated[:]
        while sum(len(s.split()) for s in body) + 12 < _MIN_DOC_WORDS and pool:
            body.append(pool.pop())
        rng.shuffle(body)
        text = " ".join([_fill(_INTROS[key], entity)] + body)
        corpus.append({"id": doc_id, "title": _fill(_TITLES[key], entity), "text": text})
        facts.extend(Fact(f.fact_id, f.entity, f.attribute, f.answer, doc_id)
                     for f, _, _ in members)
    return corpus, facts


def _aliases(answer: str) -> list[str]:
    # "349 crowns" may fairly be answered "349"; names, colours and years have no short form.
    head, _, unit = answer.partition(" ")
    return [head] if head.isdigit() and unit in ("crowns", "employees") else []


def _distractor(rng: random.Random, fact: Fact, attr: _Attr, values: list[str]) -> str:
    """A plausible wrong answer: the same attribute's value for another entity."""
    others = [v for v in values if v != fact.answer]
    if others:
        return rng.choice(others)
    while True:  # tiny worlds: only one entity has this attribute, so invent a rival value
        value = attr.make(rng)
        if value != fact.answer:
            return value


def _make_qa(rng: random.Random, facts: list[Fact], specs: list[_Attr]) -> dict[str, list[dict]]:
    """QA train/test and preference train/test; the held-out phrasing only goes to test."""
    values: dict[str, list[str]] = {}
    for f in facts:
        values.setdefault(f.attribute, []).append(f.answer)
    qa_train, qa_test, pref_train, pref_test = [], [], [], []
    for fact, attr in zip(facts, specs):
        for template in attr.train:
            prompt = _fill(template, fact.entity)
            qa_train.append({"prompt": prompt, "completion": fact.answer, "fact_id": fact.fact_id})
            pref_train.append({"prompt": prompt, "chosen": fact.answer,
                               "rejected": _distractor(rng, fact, attr, values[fact.attribute]),
                               "fact_id": fact.fact_id})
        prompt = _fill(attr.held_out, fact.entity)
        qa_test.append({"prompt": prompt, "answer": fact.answer, "aliases": _aliases(fact.answer),
                        "fact_id": fact.fact_id, "doc_id": fact.doc_id})
        pref_test.append({"prompt": prompt, "chosen": fact.answer,
                          "rejected": _distractor(rng, fact, attr, values[fact.attribute]),
                          "fact_id": fact.fact_id})
    # Trainers may not shuffle; interleaving facts keeps each batch varied.
    rng.shuffle(qa_train)
    rng.shuffle(pref_train)
    return {"qa_train": qa_train, "qa_test": qa_test,
            "pref_train": pref_train, "pref_test": pref_test}


# ---------------------------------------------------------------------- classification

# Message templates live in domain_words.CLS_TEMPLATES; each label has its own vocabulary.
def _cls_message(rng: random.Random, label: str, products: list[str], towns: list[str]) -> str:
    body = rng.choice(W.CLS_TEMPLATES[label]).format(
        p=rng.choice(products), o=rng.choice(towns), n=f"TW-{rng.randint(10000, 99999)}")
    opener = rng.choice(W.CLS_OPENERS)
    if opener.endswith(", ") and not body.startswith("I "):
        body = body[0].lower() + body[1:]
    return opener + body + rng.choice(W.CLS_CLOSERS)


def _make_cls(rng: random.Random, entities: list[tuple[str, str]]) -> tuple[list[dict], list[dict]]:
    """Balanced, duplicate-free customer messages split into train and test."""
    products = [name for kind, name in entities if kind == "product"]
    towns = [name.removesuffix(" office") for kind, name in entities if kind == "office"]
    seen: dict[str, bool] = {}
    train: list[dict] = []
    test: list[dict] = []
    need = CLS_TRAIN_PER_LABEL + CLS_TEST_PER_LABEL
    for label in LABELS:
        texts: list[str] = []
        while len(texts) < need:
            text = _cls_message(rng, label, products, towns)
            if text not in seen:  # no message may sit in both splits
                seen[text] = True
                texts.append(text)
        train.extend({"text": t, "label": label} for t in texts[:CLS_TRAIN_PER_LABEL])
        test.extend({"text": t, "label": label} for t in texts[CLS_TRAIN_PER_LABEL:])
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


# ------------------------------------------------------------------------------ public

def _verify(corpus: list[dict], facts: list[Fact], qa: dict[str, list[dict]]) -> None:
    """Guard the invariants evaluation relies on; a failure here is a generator bug."""
    texts = {d["id"]: d["text"] for d in corpus}
    for f in facts:
        if f.answer not in texts[f.doc_id]:
            raise RuntimeError(f"{f.fact_id}: answer missing from {f.doc_id}")
        for doc_id, text in texts.items():
            if doc_id != f.doc_id and f.answer.lower() in text.lower():
                raise RuntimeError(f"{f.fact_id}: answer also appears in {doc_id}")
    by_id = {f.fact_id: f.answer.lower() for f in facts}
    for row in qa["qa_train"] + qa["qa_test"]:
        if by_id[row["fact_id"]] in row["prompt"].lower():
            raise RuntimeError(f"{row['fact_id']}: answer leaks into its question")


def build_domain(seed: int = 0, n_facts: int = 80) -> DemoDomain:
    """Invent the whole demo world for ``seed``; same seed, same world, in any process."""
    if not 1 <= n_facts <= MAX_FACTS:
        raise ValueError(f"n_facts must be between 1 and {MAX_FACTS}, got {n_facts}")
    rng = random.Random(seed)
    picker = _Picker(rng)
    n_entities = max(_MIN_ENTITIES, math.ceil(n_facts / 5))
    entities = _make_entities(picker, n_entities)
    drafts = _make_facts(picker, entities, n_facts)
    corpus, facts = _make_corpus(rng, drafts)
    qa = _make_qa(rng, facts, [attr for _, _, attr in drafts])
    _verify(corpus, facts, qa)
    cls_train, cls_test = _make_cls(rng, entities)
    ood = [{"prompt": q, "answer": a} for q, a in W.OOD_QA]
    ood_train = [{"prompt": q, "answer": a} for q, a in W.OOD_TRAIN_QA]
    return DemoDomain(seed=seed, facts=facts, corpus=corpus, qa_train=qa["qa_train"],
                      qa_test=qa["qa_test"], ood=ood, ood_train=ood_train, pref_train=qa["pref_train"],
                      pref_test=qa["pref_test"], cls_train=cls_train, cls_test=cls_test)


def _readme(d: DemoDomain) -> str:
    return f"""# {COMPANY} demo domain (seed {d.seed})

An invented instrument maker generated by `tunesmith.demo.domain`; no pretrained
model can know these facts. System prompt: "{SYSTEM_PROMPT}"

| file | rows | fields |
|---|---|---|
| facts.jsonl | {len(d.facts)} | fact_id, entity, attribute, answer, doc_id (gold document) |
| corpus.jsonl | {len(d.corpus)} | id, title, text; each fact is stated in exactly one document |
| qa_train.jsonl | {len(d.qa_train)} | prompt, completion, fact_id; 3 phrasings per fact |
| qa_test.jsonl | {len(d.qa_test)} | prompt, answer, aliases, fact_id, doc_id; held-out phrasing |
| ood.jsonl | {len(d.ood)} | prompt, answer; general knowledge, unrelated to the company (held out) |
| ood_train.jsonl | {len(d.ood_train)} | prompt, answer; other general questions, to teach the decline policy |
| pref_train.jsonl | {len(d.pref_train)} | prompt, chosen, rejected, fact_id; training phrasings |
| pref_test.jsonl | {len(d.pref_test)} | prompt, chosen, rejected, fact_id; held-out phrasing |
| cls_train.jsonl | {len(d.cls_train)} | text, label ({", ".join(LABELS)}) |
| cls_test.jsonl | {len(d.cls_test)} | text, label |

Rejected answers are the same attribute's value for another entity.
"""


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows)


def write_domain(out_dir: str | Path, seed: int = 0, n_facts: int = 80) -> dict[str, Path]:
    """Write the domain as JSONL files plus README.md into ``out_dir``.

    Returns a mapping from file stem ("corpus", "qa_train", ..., "facts", "readme")
    to its path; the stems match the ``DemoDomain`` field names.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    domain = build_domain(seed=seed, n_facts=n_facts)
    paths: dict[str, Path] = {}
    for name in FILE_NAMES:
        rows = [asdict(f) for f in domain.facts] if name == "facts" else getattr(domain, name)
        paths[name] = out / f"{name}.jsonl"
        write_text_atomic(paths[name], _jsonl(rows))
    paths["readme"] = out / "README.md"
    write_text_atomic(paths["readme"], _readme(domain))
    return paths
