"""What a test checks is gone after a write: the temporaries kneepain's writers make beside a target."""

from pathlib import Path


def leftover_temporaries(folder: Path) -> list[str]:
    """Names of the writers' temporaries in ``folder`` (``.<name>.tmp-<host>-<pid>...``), sorted."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp-" in p.name)
