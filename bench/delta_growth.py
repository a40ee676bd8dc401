"""Growth of meta.sqlite over many one-article delta builds, against a full build of the same final content."""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from conftest import TinyEncoder  # noqa: E402  (hashed bag-of-words vectors: the SQLite side is what is measured)
from indexer.build import build_index  # noqa: E402
from kb.settings import load_settings  # noqa: E402


def meta_size(index_dir: Path) -> int:
    return (index_dir / (index_dir / "CURRENT").read_text().strip() / "meta.sqlite").stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--content", type=Path, default=REPO / "content", help="content folder to copy (default ./content)")
    parser.add_argument("--edits", type=int, default=300, help="one-article edits, each followed by a build")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kb-delta-growth-"))
    try:
        shutil.copytree(args.content, root / "content")
        settings = load_settings({}, content_dir=root / "content", index_dir=root / "index")
        encoder = TinyEncoder()
        build_index(settings, encoder, progress=False)
        print(f"full build: meta.sqlite {meta_size(settings.index_dir):,} bytes")
        articles = sorted(p for p in (root / "content").rglob("*.md") if "includes" not in p.parts and p.name != "SOURCE.md")
        for i in range(args.edits):
            path = articles[i % len(articles)]
            path.write_text(path.read_text() + f"\n\nEdit {i}: another sentence about outlook sync number {i}.\n")
            build_index(settings, encoder, progress=False)
            if (i + 1) % max(1, args.edits // 6) == 0:
                print(f"after {i + 1} delta builds: {meta_size(settings.index_dir):,} bytes")
        fresh = load_settings({}, content_dir=root / "content", index_dir=root / "fresh")
        build_index(fresh, encoder, progress=False)
        print(f"full build of the final content: {meta_size(fresh.index_dir):,} bytes")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
