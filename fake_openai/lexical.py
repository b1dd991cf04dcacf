"""A small honest lexical index: chunking, terms, and BM25 scores scaled to 0..1."""

import math
import re

AUTO_CHUNK_WORDS = 800
AUTO_OVERLAP_WORDS = 400
K1, B = 1.2, 0.75
STOPWORDS = frozenset(
    "a an and any are as at be but by can could did do does for from had has have how i if in into is it its "
    "me my no not of on or our s should so some tell than that the their them then there these they this "
    "those to us was we were what when where which who whom why will with would you your".split()
)
_WORD = re.compile(r"[^\W_]+")


def terms(text):
    """The lower-cased, lightly stemmed words of `text`, stop words left out."""
    found = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        found.append(word)
    return found


def chunk(text, max_words=None, overlap=0):
    """Split text into chunks: paragraphs (cut to 800 words) when `max_words` is None, else word windows."""
    if max_words is None:
        pieces = []
        for paragraph in re.split(r"\n\s*\n", text):
            pieces.extend(_windows(paragraph.split(), AUTO_CHUNK_WORDS, AUTO_OVERLAP_WORDS))
        return pieces
    return _windows(text.split(), max_words, overlap)


def _windows(words, size, overlap):
    if not words:
        return []
    step = max(1, size - overlap)
    chunks = []
    for start in range(0, len(words), step):
        chunks.append(" ".join(words[start : start + size]))
        if start + size >= len(words):
            break
    return chunks


def score_all(queries, documents):
    """Per document (a list of terms), its best score over `queries` (strings), each in [0, 1].

    A query's score is the BM25 weight of its distinct terms in the document, each term's
    saturated frequency capped at 1, divided by the sum of the terms' idf: 1.0 means every
    query term is present at least as often as in a typical chunk of the same length.
    """
    count = len(documents)
    if not count:
        return []
    average = sum(len(doc) for doc in documents) / count or 1.0
    frequency = {}
    for doc in documents:
        for term in set(doc):
            frequency[term] = frequency.get(term, 0) + 1
    best = [0.0] * count
    for query in queries:
        wanted = set(terms(query))
        if not wanted:
            continue
        idf = {t: math.log(1 + (count - frequency.get(t, 0) + 0.5) / (frequency.get(t, 0) + 0.5)) for t in wanted}
        total = sum(idf.values())
        for index, doc in enumerate(documents):
            norm = K1 * (1 - B + B * len(doc) / average)
            weight = 0.0
            for term in wanted:
                tf = doc.count(term)
                if tf:
                    weight += idf[term] * min(1.0, tf * (K1 + 1) / (tf + norm))
            best[index] = max(best[index], weight / total)
    return [round(score, 4) for score in best]
