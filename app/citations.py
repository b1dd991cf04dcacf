"""Citations as the Assistants API wrote them: a marker `【{turn}:{n}†{filename}】` in the text,
cited by a `file_citation` annotation whose `text` is the marker and whose indices frame it.

The Responses API cites a file with an `index` into the text and no marker; the marker is
inserted at that index here (later indices shift by the markers before them), once for a
whole message and step by step while its text streams in. `turn` is the output index of
the message in its response, `n` the citation's position among the message's citations.
Indices count Python characters (code points).
"""

from __future__ import annotations

MARKER = "【{turn}:{n}†{filename}】"


def marker(turn: int, n: int, filename: str) -> str:
    return MARKER.format(turn=turn, n=n, filename=filename)


def file_citation(text: str, start: int, file_id: str) -> dict:
    """The Assistants v2 annotation of the marker `text` placed at `start`."""
    return {
        "type": "file_citation",
        "text": text,
        "start_index": start,
        "end_index": start + len(text),
        "file_citation": {"file_id": file_id},
    }


def annotated(text: str, annotations: list[dict] | None, turn: int = 0) -> tuple[str, list[dict]]:
    """A Responses `output_text` (its text and annotations) as Assistants text: markers inserted
    at each `file_citation` index, and their annotations. Other annotation kinds are left out."""
    cited = [a for a in annotations or [] if a.get("type") == "file_citation"]
    cited.sort(key=lambda a: a.get("index", len(text)))
    parts, result, position = [], [], 0
    for n, citation in enumerate(cited):
        index = max(position, min(len(text), citation.get("index", len(text))))
        parts.append(text[position:index])
        position = index
        mark = marker(turn, n, citation.get("filename") or citation.get("file_id", ""))
        result.append(file_citation(mark, sum(map(len, parts)), citation.get("file_id")))
        parts.append(mark)
    parts.append(text[position:])
    return "".join(parts), result


class StreamedCitations:
    """Places the markers of one message whose text streams in: counts the upstream characters
    seen, and answers each citation's marker and annotation where it falls."""

    def __init__(self, turn: int):
        self.turn = turn
        self.upstream_chars = 0  # of the upstream text, without markers
        self.marker_chars = 0
        self.count = 0

    def text(self, delta: str) -> None:
        self.upstream_chars += len(delta)

    def cite(self, annotation: dict) -> tuple[str, dict] | None:
        """(marker, annotation) of a citation at the end of the text streamed so far; None for a
        citation of another kind or at an earlier point (its marker can no longer go in)."""
        if annotation.get("type") != "file_citation" or annotation.get("index") != self.upstream_chars:
            return None
        mark = marker(self.turn, self.count, annotation.get("filename") or annotation.get("file_id", ""))
        cited = file_citation(mark, self.upstream_chars + self.marker_chars, annotation.get("file_id"))
        self.count += 1
        self.marker_chars += len(mark)
        return mark, cited
