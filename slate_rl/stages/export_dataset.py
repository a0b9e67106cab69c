"""Stage ``export-dataset``: convert an offline dataset to Minari or to d3rlpy.

``--format minari`` writes a Minari dataset (HDF5) under ``--output-dir`` (used as
``MINARI_DATASETS_PATH``; load it with ``MINARI_DATASETS_PATH=<dir> minari.load_dataset(id)``), with the
environment spec ``recover_environment()`` builds and, given ``--references`` (the environment's references
file ``data/offline/{env}/references.json``, or the results JSON of a train-offline run on this dataset), the
reference scores of ``minari.get_normalized_score`` (ours / 100).
``--format d3rlpy`` dumps a d3rlpy ``MDPDataset`` to ``<output-dir>/<env>-<quality>.h5`` and needs
the optional extra ``pip install 'slate_rl[d3rlpy]'``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import atomic_path, file_sha256
from slate_rl.data.d4rl import load_dataset
from slate_rl.data.export import to_d3rlpy, to_minari
from slate_rl.offline.evaluation import REFERENCES_FORMAT, load_references

NAME = "export-dataset"
HELP = "export an offline dataset to Minari (HDF5) or d3rlpy (optional extra)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset .npz (data/offline/{env}/{quality}.npz)")
    parser.add_argument("--format", choices=("minari", "d3rlpy"), default="minari", help="target format")
    parser.add_argument("--output-dir", required=True, help="Minari datasets root, or the d3rlpy output directory")
    parser.add_argument("--dataset-id", default=None, help="Minari id (default: slate_rl/{env}-{quality}-v0)")
    parser.add_argument("--references", default=None,
                        help="the environment's references file (data/offline/{env}/references.json), or the results "
                        "JSON of a train-offline run on this dataset: its random and expert returns become Minari's "
                        "ref_min_score/ref_max_score")


def result_references(path: str, dataset: str, metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The reference returns of ``dataset``: a references file measured with its GeMS and expert (the dataset's
    ``gems_sha256`` and ``state_encoder.sha256``), or the ``references`` of a train-offline results JSON whose
    ``inputs.dataset`` is ``dataset``'s sha256."""
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: unreadable results JSON ({exc}); pass a train-offline result") from None
    if isinstance(result, dict) and result.get("format") == REFERENCES_FORMAT:
        return load_references(path, {"gems_sha256": metadata["gems_sha256"],
                                      "expert_sha256": metadata["state_encoder"]["sha256"]})
    refs = result.get("references") if isinstance(result, dict) else None
    inputs = result.get("inputs") if isinstance(result, dict) else None
    if not isinstance(refs, dict) or not isinstance(inputs, dict):
        raise ArtifactError(f"{path}: no 'references' and 'inputs' fields; pass the results JSON of a train-offline "
                            "run")
    if inputs.get("dataset") != file_sha256(dataset):
        raise ArtifactError(f"{path}: field 'inputs.dataset' is {inputs.get('dataset')!r}, but --dataset {dataset} "
                            f"has sha256 {file_sha256(dataset)!r}; pass a result trained on this dataset")
    return refs


def run(args: argparse.Namespace) -> None:
    dataset = load_dataset(args.dataset)
    if args.format == "minari":
        references = (result_references(args.references, args.dataset, dataset.metadata) if args.references
                      else None)
        dataset_id = to_minari(dataset, args.output_dir, args.dataset_id, references)
        print(f"wrote Minari dataset {dataset_id} under {args.output_dir}")
        return
    mdp = to_d3rlpy(dataset)
    dest = Path(args.output_dir) / f"{dataset.metadata['env']}-{dataset.metadata['quality']}.h5"
    with atomic_path(dest) as tmp, open(tmp, "w+b") as f:
        mdp.dump(f)
    print(f"wrote d3rlpy MDPDataset {dest}")
