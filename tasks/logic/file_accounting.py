"""Every file an ingest sees, accounted for: ingested, a duplicate, rejected or skipped.

A file that decodes to an image whose id (the sha256 of its stored PNG) is new becomes the
image's original when it is the first such path in sorted order; every other file with that
id is a duplicate within this ingest; a file whose image was already stored by an earlier
ingest is a duplicate of stored content (its original stays the path the image was first
stored from). So that nothing is merged silently:

    files_seen == ingested + duplicates_of_stored + duplicates_in_ingest + rejected + skipped

    >>> outcomes = classify_files({"b.png": "x", "a.png": "x", "c.png": "y"}, stored={"y": "old/c.png"})
    >>> [(o.path, o.kind, o.original) for o in outcomes][1:]
    [('b.png', 'duplicate-in-ingest', 'a.png'), ('c.png', 'duplicate-of-stored', 'old/c.png')]
    >>> counts = ingest_counts(4, [o.kind for o in outcomes], rejected=1, skipped=0)
    >>> summary_line(counts)
    'ingest: 4 files seen = 1 ingested + 2 duplicates + 1 rejected + 0 skipped'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

KINDS = ("ingested", "duplicate-in-ingest", "duplicate-of-stored")


@dataclass(frozen=True)
class FileOutcome:
    path: str
    image_id: str
    kind: str  # one of KINDS, relative to this ingest
    original: str  # the path the stored image comes from (this file's own path when it is the original)


def classify_files(image_of: Mapping[str, str], stored: Mapping[str, str]) -> list[FileOutcome]:
    """Per file that decoded to an image (path -> image_id), sorted by path: what this ingest does with it.

    Args:
        image_of: every decoded file of this ingest and its image id.
        stored: image_id -> original path, for the ids already stored before this ingest.
    """
    first: dict[str, str] = {}
    for path in sorted(image_of):
        first.setdefault(image_of[path], path)
    outcomes = []
    for path in sorted(image_of):
        image_id = image_of[path]
        if image_id in stored:
            outcomes.append(FileOutcome(path, image_id, "duplicate-of-stored", stored[image_id]))
        else:
            kind = "ingested" if first[image_id] == path else "duplicate-in-ingest"
            outcomes.append(FileOutcome(path, image_id, kind, first[image_id]))
    return outcomes


def ingest_counts(files_seen: int, kinds: Iterable[str], rejected: int, skipped: int) -> dict[str, int]:
    """The ingest's counts; raises AssertionError when they do not add up to `files_seen`."""
    kinds = list(kinds)
    of_stored, in_ingest = kinds.count("duplicate-of-stored"), kinds.count("duplicate-in-ingest")
    counts = {"files_seen": files_seen, "ingested": kinds.count("ingested"), "duplicates": of_stored + in_ingest,
              "duplicates_of_stored": of_stored, "duplicates_in_ingest": in_ingest, "rejected": rejected,
              "skipped": skipped}
    accounted = counts["ingested"] + counts["duplicates"] + rejected + skipped
    if len(kinds) != counts["ingested"] + counts["duplicates"] or accounted != files_seen:
        raise AssertionError(f"ingest lost track of files: {files_seen} seen but {accounted} accounted for "
                             f"({counts}; kinds {sorted(set(kinds) - set(KINDS))} unknown)")
    return counts


def summary_line(counts: Mapping[str, float]) -> str:
    """One human line from `ingest_counts` (or the same keys read back from MLflow / a round result)."""
    n = {key: int(counts[key]) for key in ("files_seen", "ingested", "duplicates", "rejected", "skipped")}
    return (f"ingest: {n['files_seen']} files seen = {n['ingested']} ingested + {n['duplicates']} duplicates + "
            f"{n['rejected']} rejected + {n['skipped']} skipped")
