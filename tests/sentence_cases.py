"""Hard cases for sentence splitting, each with the sentences a careful reader marks.

Shared by tests/test_sentences.py and bench/sentence_split.py (which scores every candidate
splitter on them).
"""

from __future__ import annotations

HARD_CASES: list[tuple[str, list[str]]] = [
    ("Mr. Smith went to Washington. He arrived at noon.",
     ["Mr. Smith went to Washington.", "He arrived at noon."]),
    ("Dr. Jones met Mrs. Brown at 5 p.m. on Friday.",
     ["Dr. Jones met Mrs. Brown at 5 p.m. on Friday."]),
    ("Use a tuple, e.g. a pair, or anything iterable, i.e. a list. Then call it.",
     ["Use a tuple, e.g. a pair, or anything iterable, i.e. a list.", "Then call it."]),
    ("The U.S. economy grew. Prices rose too.", ["The U.S. economy grew.", "Prices rose too."]),
    ("He moved to the U.S. in 1990.", ["He moved to the U.S. in 1990."]),
    ("Pi is about 3.14 and e is 2.718. Both are irrational.",
     ["Pi is about 3.14 and e is 2.718.", "Both are irrational."]),
    ("Version 2.0.1 fixed it. See section 4.2 for details.",
     ["Version 2.0.1 fixed it.", "See section 4.2 for details."]),
    ("The value is 3.5. It rose.", ["The value is 3.5.", "It rose."]),
    ("He paused... and then went on. The end came later.",
     ["He paused... and then went on.", "The end came later."]),
    ('She said "Stop." Then she left.', ['She said "Stop."', "Then she left."]),
    ("He said 'no.' We agreed.", ["He said 'no.'", "We agreed."]),
    ("He agreed. (Nobody else did.) The vote passed.",
     ["He agreed.", "(Nobody else did.)", "The vote passed."]),
    ("He left (finally). Then we ate.", ["He left (finally).", "Then we ate."]),
    ('"Is it true?" he asked. Yes.', ['"Is it true?" he asked.', "Yes."]),
    ("今天天气很好。我们去公园吧！你来吗？", ["今天天气很好。", "我们去公园吧！", "你来吗？"]),
    ("これはペンです。あれは本です。", ["これはペンです。", "あれは本です。"]),
    ("i went home. then i slept. it was fine.", ["i went home.", "then i slept.", "it was fine."]),
    ("We sell apples, pears, etc. and also honey.", ["We sell apples, pears, etc. and also honey."]),
    ("This sentence is\nwrapped over two lines. The next one is not.",
     ["This sentence is\nwrapped over two lines.", "The next one is not."]),
    ("Really? Yes! Fine.", ["Really?", "Yes!", "Fine."]),
    ("See Fig. 3 for the plot. It shows growth.", ["See Fig. 3 for the plot.", "It shows growth."]),
    ("The book by J. R. R. Tolkien sold well. It is long.",
     ["The book by J. R. R. Tolkien sold well.", "It is long."]),
    ("Visit www.example.com today. Or mail a.b@example.org now.",
     ["Visit www.example.com today.", "Or mail a.b@example.org now."]),
    ("Python calls object.__lt__() first. Then it tries the reflection.",
     ["Python calls object.__lt__() first.", "Then it tries the reflection."]),
    ("Call os.path.join() to build paths. It handles separators.",
     ["Call os.path.join() to build paths.", "It handles separators."]),
    ("First sentence. Second without a stop", ["First sentence.", "Second without a stop"]),
    ("One.  Two.\tThree.", ["One.", "Two.", "Three."]),
    ("Mr. and Mrs. Smith arrived. They sat.", ["Mr. and Mrs. Smith arrived.", "They sat."]),
]  # fmt: skip

# Cases the splitter in use is known to get wrong (sentencex keeps "did.) The" together).
KNOWN_MISSES = {"He agreed. (Nobody else did.) The vote passed."}
