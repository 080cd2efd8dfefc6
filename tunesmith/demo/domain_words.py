"""Word pools for the demo domain: invented names, towns and products, general-knowledge
questions, and customer-message templates for the classification task.

Kept apart from ``domain.py`` so the generator logic stays readable. Every proper
noun here is made up on purpose: a pretrained model must not be able to guess the
demo answers, so none of these should name a real person, town or product.
Pools are tuples (ordered) so that ``random.Random(seed)`` draws from them are
reproducible across processes.
"""

from __future__ import annotations

# Invented given names and family names; combined they give ~1,600 people.
FIRST_NAMES: tuple[str, ...] = (
    "Orsin", "Velda", "Kestrin", "Ammory", "Thessaly", "Borwick", "Ilvane", "Dunmar",
    "Perrine", "Quillon", "Sabeth", "Tovric", "Wrenna", "Yarrow", "Elspin", "Fennet",
    "Gildra", "Harlon", "Isolde", "Jorvan", "Kalma", "Lisbet", "Morrow", "Nettie",
    "Oswin", "Pella", "Rudd", "Saffa", "Tamsin", "Ulric", "Vesna", "Wystan",
    "Zelde", "Abner", "Brisca", "Corvin", "Delphe", "Emmerich", "Florrie", "Gunnel",
)
LAST_NAMES: tuple[str, ...] = (
    "Quarrington", "Dellavoss", "Marrowby", "Pettigrave", "Ashcombe", "Brindlemore",
    "Coldwater", "Drummle", "Everstrand", "Farthingale", "Gorrick", "Halloway",
    "Ingleby", "Jessamine", "Kettlewell", "Larkspire", "Mottram", "Nethercott",
    "Oakhollow", "Pimberton", "Rookwood", "Saltmarsh", "Thistlecombe", "Umberleigh",
    "Vantreece", "Wexcombe", "Yelverton", "Zennor", "Blackadine", "Crumlish",
    "Dovecote", "Elsworthy", "Fallowfield", "Gristlewood", "Hobbleton", "Idlewhite",
    "Jarrowgate", "Kimbrell", "Lanyard", "Moorcrest",
)

# Invented towns: a first syllable plus an ending (~450 combinations).
TOWN_HEADS: tuple[str, ...] = (
    "Varn", "Quess", "Brack", "Ostle", "Thrum", "Kell", "Maur", "Dunne", "Pell", "Skarr",
    "Wend", "Grisk", "Lorn", "Haff", "Corr", "Nym", "Tarr", "Elv", "Rusk", "Fenn",
    "Ibbel", "Josk", "Yarl", "Zell", "Arrow", "Brimm", "Cael", "Dorr", "Gann", "Hesk",
)
TOWN_TAILS: tuple[str, ...] = (
    "holt", "ingford", "wick", "mere", "by", "stead", "haven", "combe", "dale",
    "thorpe", "bury", "wold", "minster", "garth", "ness",
)

# Invented product stems and the kinds of instrument the company sells.
PRODUCT_STEMS: tuple[str, ...] = (
    "Orvell", "Calder", "Brisk", "Meridane", "Tolvar", "Quenby", "Sorrelin", "Ambrette",
    "Heskel", "Lumari", "Prycen", "Vantor", "Wendle", "Ostravel", "Kindrel", "Faraline",
    "Gossam", "Ivrel", "Jessel", "Nimbra", "Ruddock", "Selvane", "Trevane", "Umbrel",
    "Vossel", "Wickett", "Yelder", "Zephra", "Ardwyn", "Bellwyn", "Corra", "Dresvane",
    "Elbrin", "Fosk", "Gallowen", "Harrowel", "Ilmar", "Jutmar", "Korvel", "Larrow",
)
INSTRUMENTS: tuple[str, ...] = (
    "barometer", "hygrometer", "theodolite", "chronometer", "anemometer", "sextant",
    "altimeter", "tide gauge", "rain gauge", "compass", "sundial", "thermograph",
)

# Casing colours. Real words, but which product gets which colour is arbitrary.
COLOURS: tuple[str, ...] = (
    "cobalt blue", "moss green", "burnt orange", "saffron", "plum", "slate grey",
    "crimson", "ivory white", "teal", "mustard", "charcoal", "coral pink", "olive",
    "lilac", "copper", "navy", "scarlet", "sand beige", "jade", "maroon", "amber",
    "turquoise", "lemon yellow", "chestnut brown",
)

# Building names: invented stem + a building word. Stems differ from surnames so a
# building answer is never confused with a person answer.
BUILDING_STEMS: tuple[str, ...] = (
    "Lindqvar", "Osterby", "Pellucid", "Harthorne", "Carromel", "Weskett", "Brannagh",
    "Thornquist", "Albemarr", "Gwennel", "Dravenhall", "Mirrowen", "Sallowmede",
    "Fernakin", "Trollimer", "Quintel", "Restharrow", "Bellmoor", "Cindervale", "Otterell",
)
BUILDING_KINDS: tuple[str, ...] = ("Hall", "House", "Court", "Tower", "Works", "Exchange")

# Courier firms: invented stem + a carrier word.
COURIER_STEMS: tuple[str, ...] = (
    "Fennick", "Trundle", "Speedwell", "Kittering", "Marbleway", "Hoskin", "Bramble",
    "Rattray", "Swiftholm", "Dobbin", "Wayfarer", "Clatterby", "Greystock", "Pennywhistle",
    "Harker", "Lockett", "Mossop", "Gadabout", "Quickthorn", "Tumbril",
)
COURIER_KINDS: tuple[str, ...] = ("Freight", "Couriers", "Carriers", "Dispatch", "Express")

# General-knowledge questions unrelated to the company: used to check that tuning
# on the demo world does not wreck what the model already knew.
OOD_QA: tuple[tuple[str, str], ...] = (
    ("What is the boiling point of water at sea level in Celsius?", "100"),
    ("What is the capital city of France?", "Paris"),
    ("How many days are there in a leap year?", "366"),
    ("What planet is known as the Red Planet?", "Mars"),
    ("What is the chemical symbol for gold?", "Au"),
    ("How many continents are there on Earth?", "7"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare"),
    ("What gas do plants absorb from the air for photosynthesis?", "carbon dioxide"),
    ("How many legs does a spider have?", "8"),
    ("What is the freezing point of water in Celsius?", "0"),
    ("What is the capital city of Japan?", "Tokyo"),
    ("How many minutes are there in an hour?", "60"),
    ("What is the square root of 81?", "9"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("Which language is mainly spoken in Brazil?", "Portuguese"),
    ("How many sides does a hexagon have?", "6"),
    ("What is the chemical formula for water?", "H2O"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What is 12 multiplied by 12?", "144"),
    ("What is the hardest natural substance?", "diamond"),
    ("Which organ pumps blood around the human body?", "heart"),
    ("What is the capital city of Italy?", "Rome"),
    ("How many hours are there in a day?", "24"),
    ("What colour do you get by mixing blue and yellow?", "green"),
    ("Which star is at the centre of our solar system?", "the Sun"),
    ("What is the longest river in Africa?", "Nile"),
    ("How many strings does a standard violin have?", "4"),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci"),
    ("What is the smallest prime number?", "2"),
)

# Out-of-domain questions for *training* the policy (the help desk declines them); none of them
# is in OOD_QA, which stays held out for scoring.
OOD_TRAIN_QA: tuple[tuple[str, str], ...] = (
    ("What is the capital city of Germany?", "Berlin"),
    ("How many weeks are there in a year?", "52"),
    ("Who wrote the novel Pride and Prejudice?", "Jane Austen"),
    ("What is the tallest mountain on Earth?", "Mount Everest"),
    ("How many players are on a football team on the pitch?", "11"),
    ("What is the chemical symbol for iron?", "Fe"),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("What is the capital city of Spain?", "Madrid"),
    ("How many bones are in the adult human body?", "206"),
    ("What is the main language spoken in Mexico?", "Spanish"),
    ("Who discovered penicillin?", "Alexander Fleming"),
    ("What is 7 multiplied by 8?", "56"),
    ("Which ocean lies between Africa and Australia?", "Indian Ocean"),
    ("What is the largest mammal in the world?", "blue whale"),
    ("How many months have 31 days?", "7"),
    ("What is the capital city of Canada?", "Ottawa"),
    ("Which metal is liquid at room temperature?", "mercury"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong"),
    ("What is the currency of Japan?", "yen"),
    ("How many sides does a triangle have?", "3"),
    ("What is the largest desert in the world?", "Sahara"),
    ("Which composer wrote the Moonlight Sonata?", "Ludwig van Beethoven"),
    ("What is the capital city of Australia?", "Canberra"),
    ("How many seconds are in a minute?", "60"),
    ("What do bees make?", "honey"),
    ("Which country is home to the kangaroo?", "Australia"),
    ("What is the boiling point of water in Fahrenheit?", "212"),
    ("Who painted The Starry Night?", "Vincent van Gogh"),
    ("What is the smallest planet in our solar system?", "Mercury"),
    ("How many hearts does an octopus have?", "3"),
    ("What is the capital city of Egypt?", "Cairo"),
    ("Which gas makes up most of the air we breathe?", "nitrogen"),
    ("What is the square root of 64?", "8"),
    ("In which city is the Eiffel Tower?", "Paris"),
    ("What is the longest river in South America?", "Amazon"),
    ("How many colours are in a rainbow?", "7"),
    ("Who developed the theory of relativity?", "Albert Einstein"),
    ("What is frozen water called?", "ice"),
    ("Which bird is a symbol of peace?", "dove"),
    ("What is the capital city of Russia?", "Moscow"),
)

# Customer messages for the classification task. Each label has its own vocabulary
# (charged/invoice, delivery/parcel, calibrate/display, return/exchange) so a small
# classifier can learn it. Slots: {p} product, {o} office town, {n} order number.
CLS_TEMPLATES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my {p}. Can you cancel the duplicate payment?",
        "The invoice for order {n} lists the {p} at the wrong price.",
        "My card was declined when I paid for the {p}, but the money left my account.",
        "Could you send me a tax receipt for the {p} I bought from the {o} office?",
        "Why does my bank statement show two payments for order {n}?",
        "I would like to pay for the {p} in instalments. Is that possible?",
        "The discount code did not apply when I was billed for the {p}.",
        "Please update the billing address on my account before the next invoice for the {p}.",
        "I was billed for a {p} that I never ordered.",
        "Can the {o} office issue a corrected invoice for order {n}?",
        "My payment for the {p} has been showing as pending for a week.",
        "How do I change the credit card used to pay for order {n}?",
    ),
    "shipping": (
        "My {p} has not arrived yet. Where is order {n}?",
        "The tracking number for order {n} has not updated in days.",
        "Can you deliver the {p} to my work address instead of my home?",
        "How long does delivery from the {o} office usually take?",
        "The courier left the parcel with my {p} at the wrong house.",
        "Is it possible to get express delivery for the {p}?",
        "Order {n} says dispatched but the {p} never reached me.",
        "Do you ship the {p} overseas, and how long does the parcel take?",
        "I will be away next week. Can you hold the delivery of my {p}?",
        "The parcel from the {o} office seems stuck at the depot.",
        "When will the {p} be dispatched to me?",
        "Can I collect order {n} in person at the {o} office instead of waiting for delivery?",
    ),
    "technical": (
        "The needle on my {p} is stuck and will not move.",
        "How do I calibrate the {p} after changing the battery?",
        "My {p} has shown readings that are clearly wrong since yesterday.",
        "The display on the {p} flickers when it gets cold.",
        "Is there a firmware update for the {p}?",
        "The dial of my {p} drifts a little every night. How do I fix it?",
        "Which battery does the {p} take, and how do I fit it?",
        "My {p} stopped working after a fall. What could be broken inside?",
        "The {p} makes a clicking noise when I turn the bezel.",
        "Can the engineers at the {o} office help me set up the {p}?",
        "The manual for the {p} does not explain how to reset the sensor.",
        "Condensation has formed inside the glass of my {p}. Is the seal faulty?",
    ),
    "returns": (
        "I would like to return the {p}; it is not what I expected.",
        "Can I exchange my {p} for a different model?",
        "How do I send back the {p} I received as a gift?",
        "Order {n} arrived and I changed my mind. What is the returns process?",
        "Please send me a return label for the {p}.",
        "I returned the {p} to the {o} office two weeks ago. Has it been received?",
        "Is there a time limit for returning an unopened {p}?",
        "I want to swap the {p} for the larger version.",
        "The {p} was a duplicate gift. Can I bring it back to the {o} office?",
        "Do I need the original box to return the {p}?",
        "What condition must the {p} be in for you to accept a return?",
        "I sent back order {n}. When will the return be processed?",
    ),
}
CLS_OPENERS: tuple[str, ...] = ("", "Hi there. ", "Hello. ", "Good morning. ", "Dear team, ")
CLS_CLOSERS: tuple[str, ...] = ("", " Thanks.", " Thank you!", " Kind regards.", " Please help.")
