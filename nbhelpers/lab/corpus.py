"""A small deterministic text corpus: templated sentences in five languages, Python snippets, Mixtral chats.

    docs = documents(1000, seed=0)   # [{"kind": "fr", "text": "Le chat dort dans le jardin."}, ...]
    KINDS                            # ("en", "fr", "de", "es", "it", "code", "chat")

The lab MoE learns from it, and its routing is measured per kind: do the experts that handle French differ from
the ones that handle Python? Chats use the Mixtral format `<s>[INST] question [/INST] answer</s>`, in all five
languages and about code. Every document is a pure function of (seed, index), so the corpus is reproducible.
"""

from __future__ import annotations

import random

LANGUAGES = ("en", "fr", "de", "es", "it")
KINDS = LANGUAGES + ("code", "chat")

# Each slot value carries its own article or preposition, so templates need no grammar.
LEXICON = {
    "en": {
        "animal": ["the cat", "the dog", "the horse", "the bird", "the fox", "the rabbit"],
        "verb": ["sleeps", "plays", "runs", "eats", "waits", "sings"],
        "place": ["in the garden", "in the kitchen", "near the river", "under the tree", "on the bed", "in the park"],
        "food": ["bread", "cheese", "apples", "soup", "rice", "cake"],
        "person": ["my mother", "my brother", "our teacher", "the doctor", "my friend", "the baker"],
        "weather": ["sunny", "cold", "rainy", "warm", "windy", "cloudy"],
        "colour": ["red", "blue", "green", "yellow", "white", "black"],
        "thing": ["cars", "books", "chairs", "cups", "flowers", "boxes"],
        "day": ["Monday", "Tuesday", "Friday", "Sunday", "Saturday", "Wednesday"],
    },
    "fr": {
        "animal": ["le chat", "le chien", "le cheval", "l'oiseau", "le renard", "le lapin"],
        "verb": ["dort", "joue", "court", "mange", "attend", "chante"],
        "place": ["dans le jardin", "dans la cuisine", "près de la rivière", "sous l'arbre", "sur le lit",
                  "dans le parc"],
        "food": ["le pain", "le fromage", "les pommes", "la soupe", "le riz", "le gâteau"],
        "person": ["ma mère", "mon frère", "notre professeur", "le médecin", "mon ami", "le boulanger"],
        "weather": ["ensoleillé", "froid", "pluvieux", "chaud", "venteux", "nuageux"],
        "colour": ["rouges", "bleues", "vertes", "jaunes", "blanches", "noires"],
        "thing": ["voitures", "chaises", "tasses", "fleurs", "boîtes", "lampes"],
        "day": ["lundi", "mardi", "vendredi", "dimanche", "samedi", "mercredi"],
    },
    "de": {
        "animal": ["die Katze", "der Hund", "das Pferd", "der Vogel", "der Fuchs", "das Kaninchen"],
        "verb": ["schläft", "spielt", "läuft", "frisst", "wartet", "singt"],
        "place": ["im Garten", "in der Küche", "am Fluss", "unter dem Baum", "auf dem Bett", "im Park"],
        "food": ["Brot", "Käse", "Äpfel", "Suppe", "Reis", "Kuchen"],
        "person": ["meine Mutter", "mein Bruder", "unser Lehrer", "der Arzt", "mein Freund", "der Bäcker"],
        "weather": ["sonnig", "kalt", "regnerisch", "warm", "windig", "bewölkt"],
        "colour": ["rote", "blaue", "grüne", "gelbe", "weiße", "schwarze"],
        "thing": ["Autos", "Bücher", "Stühle", "Tassen", "Blumen", "Kisten"],
        "day": ["Montag", "Dienstag", "Freitag", "Sonntag", "Samstag", "Mittwoch"],
    },
    "es": {
        "animal": ["el gato", "el perro", "el caballo", "el pájaro", "el zorro", "el conejo"],
        "verb": ["duerme", "juega", "corre", "come", "espera", "canta"],
        "place": ["en el jardín", "en la cocina", "cerca del río", "bajo el árbol", "en la cama", "en el parque"],
        "food": ["pan", "queso", "manzanas", "sopa", "arroz", "pastel"],
        "person": ["mi madre", "mi hermano", "nuestro profesor", "Lucía", "mi amigo", "Pablo"],
        "weather": ["soleado", "frío", "lluvioso", "cálido", "ventoso", "nublado"],
        "colour": ["rojas", "azules", "verdes", "amarillas", "blancas", "negras"],
        "thing": ["sillas", "tazas", "flores", "cajas", "lámparas", "mesas"],
        "day": ["lunes", "martes", "viernes", "domingo", "sábado", "miércoles"],
    },
    "it": {
        "animal": ["il gatto", "il cane", "il cavallo", "l'uccello", "la volpe", "il coniglio"],
        "verb": ["dorme", "gioca", "corre", "mangia", "aspetta", "canta"],
        "place": ["nel giardino", "in cucina", "vicino al fiume", "sotto l'albero", "sul letto", "nel parco"],
        "food": ["il pane", "il formaggio", "le mele", "la zuppa", "il riso", "la torta"],
        "person": ["mia madre", "mio fratello", "Giulia", "Marco", "mia sorella", "mio nonno"],
        "weather": ["soleggiato", "freddo", "piovoso", "caldo", "ventoso", "nuvoloso"],
        "colour": ["rosse", "blu", "verdi", "gialle", "bianche", "nere"],
        "thing": ["sedie", "tazze", "rose", "scatole", "lampade", "case"],
        "day": ["lunedì", "martedì", "venerdì", "domenica", "sabato", "mercoledì"],
    },
}

TEMPLATES = {
    "en": ["{Animal} {verb} {place}.", "{Person} likes {food} and {food2}.", "Today the weather is {weather}.",
           "There are {n} {colour} {thing} {place}.", "On {day}, {person} {verb} {place}."],
    "fr": ["{Animal} {verb} {place}.", "{Person} aime {food} et {food2}.", "Aujourd'hui, le temps est {weather}.",
           "Il y a {n} {thing} {colour} {place}.", "Le {day}, {person} {verb} {place}."],
    "de": ["{Animal} {verb} {place}.", "{Person} mag {food} und {food2}.", "Heute ist das Wetter {weather}.",
           "Es gibt {n} {colour} {thing} {place}.", "Am {day} {verb} {person} {place}."],
    "es": ["{Animal} {verb} {place}.", "A {person} le gusta {food} y {food2}.", "Hoy el tiempo está {weather}.",
           "Hay {n} {thing} {colour} {place}.", "El {day}, {person} {verb} {place}."],
    "it": ["{Animal} {verb} {place}.", "A {person} piace {food} e {food2}.", "Oggi il tempo è {weather}.",
           "Ci sono {n} {thing} {colour} {place}.", "Il {day}, {person} {verb} {place}."],
}

CAPITALS = {"France": "Paris", "Germany": "Berlin", "Spain": "Madrid", "Italy": "Rome", "Japan": "Tokyo",
            "Canada": "Ottawa", "Egypt": "Cairo", "Peru": "Lima"}
THING_COLOURS = {"a banana": "yellow", "the sky": "blue", "grass": "green", "snow": "white", "a tomato": "red",
                 "coal": "black", "an orange": "orange", "a lemon": "yellow"}
# The same question and answer patterns in each language: (question, answer) with {a}, {b}, {s}.
ARITHMETIC = {
    "en": ("What is {a} plus {b}?", "{a} plus {b} is {s}."),
    "fr": ("Combien font {a} plus {b} ?", "{a} plus {b} font {s}."),
    "de": ("Was ist {a} plus {b}?", "{a} plus {b} ist {s}."),
    "es": ("¿Cuánto es {a} más {b}?", "{a} más {b} es {s}."),
    "it": ("Quanto fa {a} più {b}?", "{a} più {b} fa {s}."),
}
OPERATIONS = {"sum": "+", "difference": "-", "product": "*", "quotient": "/", "power": "**", "remainder": "%"}
NAMES = ["total", "count", "value", "result", "items", "score", "width", "height", "price", "speed"]


def _fill(language: str, rng: random.Random) -> str:
    words = LEXICON[language]
    pick = {slot: rng.choice(values) for slot, values in words.items()}
    pick["food2"] = rng.choice([f for f in words["food"] if f != pick["food"]])
    pick["n"] = rng.randint(2, 9)
    text = rng.choice(TEMPLATES[language]).format(
        Animal=pick["animal"][0].upper() + pick["animal"][1:], Person=pick["person"][0].upper() + pick["person"][1:],
        **pick)
    return text[0].upper() + text[1:]


def prose(language: str, rng: random.Random) -> str:
    """Two to four templated sentences in one language."""
    return " ".join(_fill(language, rng) for _ in range(rng.randint(2, 4)))


def code(rng: random.Random) -> str:
    """A small Python snippet: a function, a loop, or a comprehension."""
    name, other = rng.sample(NAMES, 2)
    operation, symbol = rng.choice(list(OPERATIONS.items()))
    n = rng.randint(2, 9)
    return rng.choice([
        f"def {operation}(a, b):\n    return a {symbol} b\n",
        f"for i in range({n}):\n    print(i {symbol} {rng.randint(1, 5)})\n",
        f"{name} = [x {symbol} {n} for x in {other}]\n",
        f"def get_{name}({other}):\n    if {other} > {n}:\n        return {other}\n    return {n}\n",
        f"{name} = {{}}\nfor key, value in {other}.items():\n    {name}[key] = value {symbol} {n}\n",
        f"class {name.title()}:\n    def __init__(self, {other}):\n        self.{other} = {other}\n",
    ])


def exchange(rng: random.Random) -> tuple[str, str]:
    """One (question, answer) pair; the answer starts with a space, as the model writes it after [/INST]."""
    kind = rng.randrange(6)
    if kind == 0:
        language = rng.choice(LANGUAGES)
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        question, answer = ARITHMETIC[language]
        return question.format(a=a, b=b), " " + answer.format(a=a, b=b, s=a + b)
    if kind == 1:
        country = rng.choice(list(CAPITALS))
        return f"What is the capital of {country}?", f" The capital of {country} is {CAPITALS[country]}."
    if kind == 2:
        thing = rng.choice(list(THING_COLOURS))
        return f"What colour is {thing}?", f" {thing[0].upper() + thing[1:]} is {THING_COLOURS[thing]}."
    if kind == 3:
        operation, symbol = rng.choice(list(OPERATIONS.items()))
        return (f"Write a Python function that returns the {operation} of a and b.",
                f" def {operation}(a, b):\n    return a {symbol} b")
    if kind == 4:
        language = rng.choice(LANGUAGES[1:])
        return (f"Write a sentence in {dict(fr='French', de='German', es='Spanish', it='Italian')[language]}.",
                " " + _fill(language, rng))
    return rng.choice([
        ("What is a mixture of experts?", " A layer where a router sends each token to two of eight experts."),
        ("Hello!", " Hello! How can I help you today?"),
        ("Who are you?", " I am a tiny lab model trained on a small corpus."),
        ("What does the router do?", " The router scores the experts and picks the best two for each token."),
    ])


def chat(rng: random.Random) -> str:
    """One or two turns in the Mixtral format: <s>[INST] question [/INST] answer</s>[INST] ... [/INST] ...</s>"""
    turns = [exchange(rng) for _ in range(rng.choice((1, 1, 2)))]
    return "<s>" + "".join(f"[INST] {q} [/INST]{a}</s>" for q, a in turns)


def document(kind: str, rng: random.Random) -> str:
    if kind in LANGUAGES:
        return prose(kind, rng)
    if kind == "code":
        return code(rng)
    if kind == "chat":
        return chat(rng)
    from nbhelpers.checks import ParameterError

    raise ParameterError("kind", kind, ", ".join(KINDS))


def documents(n: int, seed: int = 0, kinds=KINDS) -> list[dict]:
    """`n` documents cycling through `kinds`; document i depends only on (seed, i)."""
    from nbhelpers import checks

    checks.integer("n", n, minimum=0)
    for kind in kinds:
        checks.choice("kind", kind, KINDS)
    return [{"kind": kinds[i % len(kinds)], "text": document(kinds[i % len(kinds)], random.Random(f"{seed}:{i}"))}
            for i in range(n)]
