"""A managed tag vocabulary: tags a model can learn from.

    tagged output --`build_vocabulary` (counts, variants merged, rare tags dropped)--> vocab.json
    vocab.json --`Vocabulary.map_tags` at conversion and training--> canonical `tags`
    tagged output --`tag_figures`--> raw vs canonical counts, coverage, co-occurrences, drift

`vocabulary` (loading, fingerprint, mapping) needs nothing beyond the core package; `build`
needs the `vocab` extra (rapidfuzz, inflect): `pip install 'condlabel[vocab]'`.
"""

from condlabel.tags.vocabulary import (
    OOV_POLICIES,
    Vocabulary,
    VocabularyError,
    load_vocabulary,
    tag_key,
)

__all__ = ["OOV_POLICIES", "Vocabulary", "VocabularyError", "load_vocabulary", "tag_key"]
