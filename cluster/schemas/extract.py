"""Re-create the vendored KubeRay schemas from the CustomResourceDefinitions.

Reads ``ray.io_{rayclusters,rayjobs,rayservices}.yaml`` from a KubeRay checkout's
``ray-operator/config/crd/bases/`` (or any folder holding them) and writes, beside this file,
``<kind>.v1.json``: the ``openAPIV3Schema`` of API version ``v1`` of each CRD, unchanged apart
from the container format (YAML -> JSON). Also copies the licence file when it is there.

Example:
  python cluster/schemas/extract.py ../shared/data/kuberay-crds
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CRDS = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
VERSION = "v1"


def extract(crd_path: Path, version: str = VERSION) -> dict:
    """The ``openAPIV3Schema`` of ``version`` in one CRD file.

    Raises:
        ValueError: the file is not a CRD or does not serve ``version``.
    """
    crd = yaml.load(crd_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(crd, dict) or crd.get("kind") != "CustomResourceDefinition":
        raise ValueError(
            f"{crd_path}: not a CustomResourceDefinition (kind={crd.get('kind') if isinstance(crd, dict) else None!r})"
        )
    versions = {v.get("name"): v for v in crd["spec"].get("versions", [])}
    if version not in versions:
        raise ValueError(f"{crd_path}: has no version {version!r}; it has {sorted(versions)}")
    return versions[version]["schema"]["openAPIV3Schema"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("crd_dir", type=Path, help="folder holding the ray.io_*.yaml CRD files")
    args = p.parse_args(argv)
    for kind, name in CRDS.items():
        src = args.crd_dir / name
        if not src.is_file():
            raise SystemExit(f"missing CRD file: {src}")
        out = HERE / f"{kind.lower()}.{VERSION}.json"
        out.write_text(json.dumps(extract(src), indent=1, sort_keys=True) + "\n")
        print(f"wrote {out.relative_to(HERE.parents[1])} from {src}")
    if (args.crd_dir / "LICENSE").is_file():
        shutil.copyfile(args.crd_dir / "LICENSE", HERE / "LICENSE")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
