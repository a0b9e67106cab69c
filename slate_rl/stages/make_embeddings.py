"""Stage ``make-embeddings``: the item table ``data/embeddings/{kind}.npy``.

Generated from a seed with the spec's recipe, or taken from a file (such as the paper's own
tables) after validation, so every later stage reads one ``.npy`` per kind.
"""

from __future__ import annotations

import argparse

from slate_rl.core.config import bounded_int
from slate_rl.core.io import save_npy
from slate_rl.sim.config import MAX_ITEMS
from slate_rl.sim.embeddings import (
    DEFAULT_EMBEDDINGS_SEEDS,
    EARLIER_FOCUSED_POWER,
    generate_item_embeddings,
    load_item_embeddings,
)
from slate_rl.stages.common import finite_float

NAME = "make-embeddings"
HELP = "write the focused or diffuse item-embedding table (data/embeddings/{kind}.npy)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", required=True, choices=("focused", "diffuse"), help="which table")
    parser.add_argument(
        "--seed", type=int, default=None, help=f"generation seed (default: the kind's, {DEFAULT_EMBEDDINGS_SEEDS})"
    )
    parser.add_argument(
        "--power", type=finite_float, default=1.0,
        help="raise every coordinate to this power before normalising (default 1.0: the published tables' "
        f"statistics; {EARLIER_FOCUSED_POWER} is the earlier focused recipe)",
    )
    parser.add_argument(
        "--from-file", default=None,
        help="copy this .npy/.pt table (validated: 1000 x 20, finite, non-negative) instead of generating one",
    )
    parser.add_argument("--num-items", type=bounded_int(MAX_ITEMS, minimum=1), default=1000,
                        help=f"catalogue size, 1 to {MAX_ITEMS} (default: 1000)")
    parser.add_argument("--output", required=True, help="destination .npy")


def run(args: argparse.Namespace) -> None:
    if args.from_file:
        table = load_item_embeddings(args.from_file, args.num_items, 20)
    else:
        table = generate_item_embeddings(args.kind, args.seed, num_items=args.num_items, power=args.power)
    save_npy(args.output, table)
    print(f"wrote {args.output} ({table.shape[0]} x {table.shape[1]})")
