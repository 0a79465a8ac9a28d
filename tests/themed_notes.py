"""Short notes on distinct themes, for libraries whose answers sit in known shares.

Each theme makes sentences from three lists (who, did what, to what or where), so a share's
notes are distinct yet all about one thing, and a query on the theme has its answers in the
shares that hold that theme and nowhere else.
"""

from __future__ import annotations

import itertools
import random

THEMES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "astronomy": (
        ["The astronomer", "Our telescope", "The observatory", "An amateur stargazer"],
        ["photographed", "tracked", "measured the brightness of", "sketched"],
        ["a comet near Jupiter", "the Andromeda galaxy", "a faint nebula", "the rings of Saturn", "a meteor shower"],
    ),
    "baking": (
        ["The baker", "My grandmother", "The pastry chef", "A home cook"],
        ["kneaded", "proofed overnight", "baked at high heat", "scored and glazed"],
        ["a sourdough loaf", "a batch of croissants", "rye bread with caraway", "a brioche", "cinnamon rolls"],
    ),
    "football": (
        ["The striker", "Our goalkeeper", "The midfielder", "The young winger"],
        ["scored against", "saved a penalty from", "outran the defence of", "was substituted against"],
        ["the league champions", "a rival club in the derby", "the cup finalists", "the national team", "a promoted side"],
    ),
    "gardening": (
        ["The gardener", "My neighbour", "The allotment club", "A beginner grower"],
        ["pruned", "planted", "watered and mulched", "repotted"],
        ["the tomato seedlings", "a row of rose bushes", "the apple trees", "spring bulbs", "herbs on the balcony"],
    ),
    "sailing": (
        ["The skipper", "Our crew", "The harbour master", "A solo sailor"],
        ["reefed the mainsail of", "anchored", "navigated", "repaired the rigging of"],
        ["the yacht in a gale", "a catamaran off the coast", "the dinghy at dawn", "a ketch across the channel", "the sloop near the lighthouse"],
    ),
    "programming": (
        ["The developer", "Our test suite", "The compiler", "A code reviewer"],
        ["found a bug in", "refactored", "optimised", "rewrote"],
        ["the database query layer", "a recursive parser", "the memory allocator", "the network protocol handler", "a sorting routine"],
    ),
    "cats": (["The kitten", "My old cat", "A stray tabby", "The Siamese"], ["chased", "slept beside", "purred at", "hid from"], ["a ball of yarn", "the warm radiator", "the vacuum cleaner", "a red laser dot"]),
    "volcanoes": (["The volcano", "A lava dome", "The crater", "An old caldera"], ["erupted over", "spewed ash across", "rumbled beneath", "collapsed into"], ["the island village", "the valley", "the sea", "the glacier"]),
    "opera": (["The soprano", "The tenor", "The orchestra", "The conductor"], ["rehearsed", "performed", "premiered", "recorded"], ["an aria by Puccini", "the overture", "a duet from Verdi", "the final act"]),
    "chess": (["The grandmaster", "My opponent", "The young prodigy", "The club champion"], ["sacrificed", "castled behind", "promoted", "blundered"], ["a knight", "the queen's pawn", "a rook on the open file", "the bishop pair"]),
    "weather": (["The storm", "A cold front", "The heatwave", "Thick fog"], ["swept across", "settled over", "flooded", "froze"], ["the northern plains", "the coastal towns", "the city streets", "the mountain passes"]),
    "medicine": (["The nurse", "The surgeon", "A family doctor", "The pharmacist"], ["treated", "vaccinated", "examined", "prescribed antibiotics for"], ["a child with fever", "an elderly patient", "a broken wrist", "a persistent cough"]),
}
QUERIES = {
    "astronomy": "watching planets and stars through a telescope",
    "baking": "how to bake bread with yeast and flour",
    "football": "a soccer match and the goals scored",
    "gardening": "growing vegetables and flowers in the garden",
    "sailing": "a boat at sea with sails and wind",
    "programming": "a developer fixed a bug in the code",
}


def notes(theme: str, count: int, seed: int) -> list[str]:
    """``count`` distinct sentences on ``theme``."""
    who, did, what = THEMES[theme]
    combinations = list(itertools.product(who, did, what))
    random.Random(seed).shuffle(combinations)
    return [f"{a} {b} {c}." for a, b, c in combinations[:count]]
