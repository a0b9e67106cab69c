"""Stage ``export-dataset``: convert an offline dataset to Minari or to d3rlpy.

``--format minari`` writes a Minari dataset (HDF5) under ``--output-dir`` (used as
``MINARI_DATASETS_PATH``; load it with ``MINARI_DATASETS_PATH=<dir> minari.load_dataset(id)``).
``--format d3rlpy`` dumps a d3rlpy ``MDPDataset`` to ``<output-dir>/<env>-<quality>.h5`` and needs
the optional extra ``pip install 'slate_rl[d3rlpy]'``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slate_rl.core.io import atomic_path
from slate_rl.data.d4rl import load_dataset
from slate_rl.data.export import to_d3rlpy, to_minari
from slate_rl.stages.common import check_output_dir

NAME = "export-dataset"
HELP = "export an offline dataset to Minari (HDF5) or d3rlpy (optional extra)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset .npz (data/offline/{env}/{quality}.npz)")
    parser.add_argument("--format", choices=("minari", "d3rlpy"), default="minari", help="target format")
    parser.add_argument("--output-dir", required=True, help="Minari datasets root, or the d3rlpy output directory")
    parser.add_argument("--dataset-id", default=None, help="Minari id (default: slate_rl/{env}-{quality}-v0)")


def run(args: argparse.Namespace) -> None:
    check_output_dir(args.output_dir, "--output-dir")
    dataset = load_dataset(args.dataset)
    if args.format == "minari":
        dataset_id = to_minari(dataset, args.output_dir, args.dataset_id)
        print(f"wrote Minari dataset {dataset_id} under {args.output_dir}")
        return
    mdp = to_d3rlpy(dataset)
    dest = Path(args.output_dir) / f"{dataset.metadata['env']}-{dataset.metadata['quality']}.h5"
    with atomic_path(dest) as tmp, open(tmp, "w+b") as f:
        mdp.dump(f)
    print(f"wrote d3rlpy MDPDataset {dest}")
