"""Public echo datasets, read exactly as published, as ingest's videos and studies tables.

Each module reads one dataset's folder and knows its layout, quirks, labels and official split:

| name | module | views | labels | split |
| --- | --- | --- | --- | --- |
| ``echonet-dynamic`` | :mod:`.echonet_dynamic` | A4C | ejection_fraction, esv, edv | FileList's TRAIN/VAL/TEST |
| ``echonet-pediatric`` | :mod:`.echonet_pediatric` | A4C, Parasternal_Short | ejection_fraction, age, ... | folds 0-9 (option ``fold``) |
| ``echonet-lvh`` | :mod:`.echonet_lvh` | Parasternal_Long | IVSd, LVIDd, LVPWd, LVIDs (cm) | train/val/test |
| ``camus`` | :mod:`.camus` | A2C, A4C | ejection_fraction, image quality, ... | database_split (NIfTI) |
| ``mimic-echo`` | :mod:`.mimic_echo` | none (classified) | structured measurements | by subject_id hash |

``read_dataset(name, root, options)`` returns :class:`DatasetTables`; ``echoprime ingest --dataset
NAME --input ROOT`` writes them as the two tables of an ordinary ingest (docs/datasets/). The
stand-in generators (``echoprime synth --as NAME``) are in :mod:`echoprime.datasets.standins`.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from echoprime.datasets.base import (
    DatasetLayoutError,
    DatasetOptionError,
    DatasetReject,
    DatasetRoot,
    DatasetTables,
    parse_options,
)

DATASETS: dict[str, str] = {
    "echonet-dynamic": "echoprime.datasets.echonet_dynamic",
    "echonet-pediatric": "echoprime.datasets.echonet_pediatric",
    "echonet-lvh": "echoprime.datasets.echonet_lvh",
    "camus": "echoprime.datasets.camus",
    "mimic-echo": "echoprime.datasets.mimic_echo",
}
"""Registry: dataset name -> the module that reads it (``NAME``, ``TITLE``, ``LABELS``, ``OPTIONS``, ``read``)."""


def dataset_names() -> list[str]:
    return list(DATASETS)


def adapter(name: str) -> ModuleType:
    """The module of a dataset.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return importlib.import_module(DATASETS[name])


def read_dataset(
    name: str,
    root: str,
    options: Mapping[str, Any] | Iterable[str] | None = None,
    *,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> DatasetTables:
    """Read a dataset folder as published into ingest's two tables.

    Args:
        name: a registry name (:data:`DATASETS`).
        root: the dataset folder (local path or ``s3://bucket/prefix``).
        options: dataset options, as a mapping or ``key=value`` strings (each module's ``OPTIONS``).
        split_fractions: train / val / test shares for datasets without an official split (split by
            patient with ingest's hash).

    Raises:
        ValueError: an unknown dataset.
        DatasetOptionError: an unknown option or a bad value.
        DatasetLayoutError: the folder is not laid out as the dataset publishes it (names the file
            and what was expected), or no row of a table could be used.
    """
    mod = adapter(name)
    opts = parse_options(options, mod.OPTIONS, name)
    return mod.read(DatasetRoot(root, mod.TITLE), opts, split_fractions)


def help_text() -> str:
    """One line per dataset with its options, for ``--help``."""
    lines = []
    for name in DATASETS:
        mod = adapter(name)
        opts = "; ".join(f"{k}: {h}" for k, h in mod.OPTIONS.items())
        lines.append(f"{name} ({mod.TITLE}){': ' + opts if opts else ''}")
    return " | ".join(lines)


__all__ = [
    "DATASETS",
    "DatasetLayoutError",
    "DatasetOptionError",
    "DatasetReject",
    "DatasetTables",
    "adapter",
    "dataset_names",
    "help_text",
    "read_dataset",
]
