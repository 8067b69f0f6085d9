"""Regenerate the bundled corpus, or write its per-character ground truth.

    python corpora/make_corpus.py                    # rewrite corpora/synthetic_prose.txt
    python corpora/make_corpus.py --truth truth.tsv  # the ground truth of the same text, as TSV

The TSV has a header row and then one row per character: offset, char, in_double_quotes,
in_single_quotes, paren_depth, square_depth, curly_depth, bracket_depth, column. Booleans are written as
0/1; in the char column a newline is written as \\n, a tab as \\t, a carriage return as \\r and a
backslash as \\\\. Conventions are those of `charrnn.synthetic` (state after reading the character).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

try:
    from charrnn import synthetic
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(HERE.parent))
    from charrnn import synthetic

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\"}


def write_truth(annotated: synthetic.AnnotatedText, path: Path) -> None:
    """One TSV row per character of `annotated.text`, after a header row."""
    columns = [getattr(annotated, name).astype(int).tolist() for name in synthetic.TRUTH_FIELDS]
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(("offset", "char") + synthetic.TRUTH_FIELDS) + "\n")
        for offset, (char, *values) in enumerate(zip(annotated.text, *columns)):
            fields = [str(offset), _ESCAPES.get(char, char)] + [str(v) for v in values]
            f.write("\t".join(fields) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-chars", type=int, default=synthetic.DEFAULT_NUM_CHARS)
    parser.add_argument("--seed", type=int, default=synthetic.DEFAULT_SEED)
    parser.add_argument("--output", type=Path, default=HERE / "synthetic_prose.txt", help="the text file")
    parser.add_argument("--truth", type=Path, help="write the ground truth TSV here instead of the text")
    args = parser.parse_args(argv)

    annotated = synthetic.generate(args.num_chars, args.seed)
    if args.truth is not None:
        write_truth(annotated, args.truth)
        print(f"wrote the ground truth of {len(annotated):,} characters to {args.truth}")
    else:
        # Bytes, not text mode: UTF-8, LF line ends and no BOM on every platform.
        args.output.write_bytes(annotated.text.encode("utf-8"))
        print(f"wrote {len(annotated):,} characters to {args.output}")


if __name__ == "__main__":
    main()
