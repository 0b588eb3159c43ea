"""A corpus of social media posts for the sentiment example: 3,200 posts about one product launch
on 4 platforms over 2 weeks, with a known sentiment mix per platform and an outage on one day.

Each post is written from a template of its intended sentiment (positive, negative or neutral)
filled with the product's names, hashtags and emoji, the way people post about a phone launch;
the platform's mix decides how many of each it gets. On 14 May the service had an outage, and
every platform turns negative that day. Fixed by a seed: every call gives the same posts.

    python examples/social_posts.py posts.jsonl    # write the corpus as JSON Lines
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sys
from pathlib import Path
from typing import TypedDict

SEED = 8
START = dt.datetime(2024, 5, 6, tzinfo=dt.UTC)  # a Monday
DAYS = 14
OUTAGE = dt.date(2024, 5, 14)
OUTAGE_NEGATIVE = 0.75  # share of negative posts on the outage day, on every platform

# Posts per platform and the intended mix (positive, negative, neutral).
PLATFORMS: dict[str, tuple[int, tuple[float, float, float]]] = {
    "x": (1200, (0.35, 0.40, 0.25)),
    "reddit": (900, (0.30, 0.45, 0.25)),
    "mastodon": (500, (0.50, 0.20, 0.30)),
    "youtube": (600, (0.55, 0.25, 0.20)),
}
PRODUCTS = ("Nimbus 5", "the Nimbus 5", "Nimbus 5 Pro", "the new Nimbus")
FEATURES = ("camera", "battery", "screen", "charger", "update", "speaker", "keyboard app")
AUTHORS = (
    "ana_codes", "bytebard", "carla.m", "dev_dan", "echo_park", "fern_g", "gus_reviews",
    "hana_k", "ivo_tech", "jules", "kai_builds", "lena_p", "milo.t", "nadia_writes", "oskar",
    "pri_ya", "quinn_r", "rosa_b", "sam_plays", "tomasz", "uma_s", "vik", "wren", "xan_dr",
    "yusuf_a", "zoe_l",
)  # fmt: skip

POSITIVE = (
    "Absolutely love {product}! The {feature} is amazing.",
    "{product} is fantastic, best phone I have owned. {tag}",
    "Wow, the {feature} on {product} is so good. Really happy with it!",
    "Great job on {product}, the {feature} works perfectly. {emoji}",
    "Just got {product} and I am thrilled, the {feature} is excellent.",
    "Impressed by {product}. Smooth, fast and beautiful. {tag}",
    "Thank you for {product}, the new {feature} is a huge improvement!",
)
NEGATIVE = (
    "{product} keeps crashing, the {feature} is terrible. So frustrated.",
    "Worst update ever, {product} is broken and the {feature} is useless. {tag}",
    "Really disappointed with {product}. The {feature} is awful.",
    "Hate the new {feature} on {product}, it is slow and buggy. {angry}",
    "{product} died again today. Horrible {feature}, waste of money.",
    "Support ignored me for a week, {product} is a disaster.",
    "The {feature} on {product} stopped working. Angry and annoyed.",
)
NEUTRAL = (
    "{product} ships in three colours from Friday. {tag}",
    "Does {product} have a headphone jack?",
    "The {feature} of {product} is covered in the review at 10am.",
    "Comparing {product} with last year's model this weekend.",
    "{product} firmware 5.1 is rolling out in Europe today.",
    "Which case fits {product}? Asking for the {feature} cutout.",
    "Unboxing {product} on stream tonight at 8pm.",
)
OUTAGE_NEGATIVE_TEXTS = (
    "Terrible: {product} cloud is down for hours and nothing syncs. #NimbusDown",
    "Outage again? {product} is useless today, so frustrating. #NimbusDown",
    "Lost my photos during the {product} outage. Awful. #NimbusDown",
)
TEMPLATES = {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}
TAGS = ("#Nimbus5", "#NimbusLaunch", "#tech", "#phones", "")
HAPPY = ("😍", "🎉", "👍", "🔥")
ANGRY = ("😡", "👎", "🤬")


class Post(TypedDict):
    id: str
    platform: str
    time: str  # ISO 8601, UTC
    author: str
    text: str
    intended: str  # positive, negative, neutral: what the generator meant (ground truth)


def posts() -> list[Post]:
    """The corpus, in time order."""
    rng = random.Random(SEED)
    made: list[Post] = []
    for platform, (count, mix) in PLATFORMS.items():
        for n in range(count):
            when = START + dt.timedelta(seconds=rng.randrange(DAYS * 86_400))
            if when.date() == OUTAGE:
                weights = (
                    (1 - OUTAGE_NEGATIVE) * mix[0] / (mix[0] + mix[2]),
                    OUTAGE_NEGATIVE,
                    (1 - OUTAGE_NEGATIVE) * mix[2] / (mix[0] + mix[2]),
                )
            else:
                weights = mix
            intended = rng.choices(("positive", "negative", "neutral"), weights)[0]
            pool = TEMPLATES[intended]
            if intended == "negative" and when.date() == OUTAGE and rng.random() < 0.6:
                pool = OUTAGE_NEGATIVE_TEXTS
            text = rng.choice(pool).format(
                product=rng.choice(PRODUCTS),
                feature=rng.choice(FEATURES),
                tag=rng.choice(TAGS),
                emoji=rng.choice(HAPPY),
                angry=rng.choice(ANGRY),
            )
            text = text[0].upper() + text[1:]
            made.append(
                Post(
                    id=f"{platform}-{n:04d}",
                    platform=platform,
                    time=when.isoformat(),
                    author=rng.choice(AUTHORS),
                    text=" ".join(text.split()),
                    intended=intended,
                )
            )
    made.sort(key=lambda p: (p["time"], p["id"]))
    return made


def write_jsonl(path: str | os.PathLike[str], corpus: list[Post] | None = None) -> Path:
    """The corpus as JSON Lines, one post a line."""
    target = Path(path)
    with target.open("w", encoding="utf-8") as out:
        for post in posts() if corpus is None else corpus:
            out.write(json.dumps(post, ensure_ascii=False) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python examples/social_posts.py OUT.jsonl", file=sys.stderr)
        return 2
    corpus = posts()
    write_jsonl(args[0], corpus)
    print(f"{args[0]}: {len(corpus):,} posts on {len(PLATFORMS)} platforms over {DAYS} days")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
