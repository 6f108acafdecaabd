"""The model bundle: one directory (local or ``s3://``) with everything interpretation needs.

::

    BUNDLE/manifest.json            written last: versions, components, label sets, preprocessing
                                    spec, and the sha256 of every other file
    BUNDLE/config.yaml              the resolved config of the run that made it
    BUNDLE/preprocess.json          the preprocessing spec (never retyped by a caller)
    BUNDLE/video_encoder.safetensors
    BUNDLE/view_classifier.safetensors
    BUNDLE/text_encoder.safetensors (optional: text embedding / search endpoints)
    BUNDLE/tokenizer/               (with the text encoder)
    BUNDLE/mil.safetensors          (learned attention; absent when the table form is used)
    BUNDLE/mil_table.csv            the 15 x 11 section x view table (release format)
    BUNDLE/bank/                    the candidate bank (see echoprime.retrieval.bank)
    BUNDLE/thresholds.json          decision thresholds of the binary phenotypes
    BUNDLE/calibration.json         calibration maps, measurement intervals and grade scales
                                    (echoprime.retrieval.calibration; optional)

A bundle built by the training pipeline keeps each stage's output in its own folder instead
(``pretrained/clip.safetensors`` holding both towers, ``views/``, ``mil/``); the manifest's
``components`` say which file (and key prefix) each model comes from, so both layouts load
the same way.

Nothing in a bundle is a pickle. Loading checks every file against the manifest's hashes and
refuses a bundle with a missing, extra-modified or tampered file, naming it (a file hashed at an
earlier load and unchanged since, by its inode, size, mtime and ctime, is not hashed again:
:class:`VerifiedFiles`). A bundle is untrusted
input until then: a manifest path that leaves the bundle (absolute, ``..``, a symlink pointing
out) is refused before anything is read or written, on local folders and ``s3://`` alike.

``BUNDLE/manifest.sig`` (echoprime.signing) signs the manifest's bytes, and so every file:
written at commit when a signing key is in the environment (or later by ``echoprime
sign-bundle``), and required on load whenever a bundle key is configured.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from echoprime import __version__, storage
from echoprime.signing import SIGNATURE, BundleKeys
from echoprime.taxonomy import MIL_SECTIONS, PHENOTYPE_NAMES, SECTIONS, VIEWS

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
HASH_CHUNK = 8 << 20


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the bundle and the file at fault."""


def manifest_sha256(bundle: str) -> str:
    """The sha256 of a bundle's manifest file: the bundle's content hash (the manifest lists every
    file's sha256). What batch-interpret records, Serve reports and the SR names the model by.

    Raises:
        BundleError: the bundle has no manifest.
    """
    uri = storage.locate(bundle).join(MANIFEST).uri
    if not storage.exists(uri):
        raise BundleError(f"bundle {bundle}: {MANIFEST} is missing (not a bundle, or it was never committed)")
    return hashlib.sha256(storage.read_bytes(uri)).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def cache_root() -> Path:
    """This machine's echoprime cache: ``$ECHOPRIME_CACHE``, default ``~/.cache/echoprime``."""
    return Path(os.environ.get("ECHOPRIME_CACHE", Path.home() / ".cache" / "echoprime"))


VERIFY_ENV = "ECHOPRIME_VERIFY"
"""``always``: hash every file of a bundle at every load. Default (``cached``): a file whose
identity is unchanged since a load hashed it is not hashed again (:class:`VerifiedFiles`)."""


class VerifiedFiles:
    """What earlier loads on this machine hashed: per file, its identity when hashed and the hash.

    A file is taken as verified without reading it when its identity, ``(device, inode, size,
    mtime_ns, ctime_ns)``, equals the recorded one and the recorded sha256 is the one the manifest
    asks for. Any write to the file, any replacement (a new inode) or any change of its metadata
    moves its ctime, which no unprivileged process can set back (``utime`` sets atime and mtime
    only), so a changed file is hashed again. Kept in ``$ECHOPRIME_CACHE/verified-files.json``
    (default ``~/.cache/echoprime``), one JSON object, replaced atomically; a record that cannot
    be read or written only means hashing again. ``ECHOPRIME_VERIFY=always`` hashes every load.
    Why it exists: a 1.23 M-entry bank's 2.5 GB of embeddings took ~5 s to hash at every start
    on the development VM (docs/privacy.md).
    """

    racy_ns = 2_000_000_000
    """A file changed less than this before it was hashed is not recorded: the kernel stamps
    ctime from a coarse clock (a few ms), so a second write within the same tick would leave the
    identity unchanged (git's "racily clean" entries, the same remedy)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_root() / "verified-files.json"
        self.enabled = os.environ.get(VERIFY_ENV, "cached").strip().lower() != "always"
        self.records: dict[str, list] = {}
        self.changed = False
        if self.enabled:
            try:
                data = json.loads(self.path.read_text())
                self.records = data if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self.records = {}

    @staticmethod
    def _identity(p: Path) -> tuple[str, list[int]]:
        st = p.stat()
        return str(p.resolve()), [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]

    def matches(self, p: Path, digest: str) -> bool:
        """Whether ``p``'s content has sha256 ``digest`` (hashed unless recorded as unchanged)."""
        key, ident = self._identity(p)
        if self.enabled and self.records.get(key) == [*ident, digest]:
            return True
        ok = sha256_file(p) == digest
        if ok and self.enabled:
            key2, ident2 = self._identity(p)
            settled = time.time_ns() - ident[4] > self.racy_ns
            if (key2, ident2) == (key, ident) and settled:  # unchanged while it was hashed
                self.records[key] = [*ident, digest]
                self.changed = True
        return ok

    def save(self) -> None:
        if not (self.enabled and self.changed):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:  # merge with what other processes recorded meanwhile
                on_disk = json.loads(self.path.read_text())
                if isinstance(on_disk, dict):
                    self.records = {**on_disk, **self.records}
            except (OSError, ValueError):
                pass
            self.records = {k: v for k, v in self.records.items() if os.path.exists(k)}  # files gone
            fd, tmp = tempfile.mkstemp(prefix=".verified-", dir=self.path.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(self.records, fh)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only home: the next load hashes again
        self.changed = False


def _files(root: Path) -> list[str]:
    return sorted(
        # Only the bundle's own manifest is left out: parts have manifests too (bank/manifest.json).
        rel
        for rel in (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if rel not in (MANIFEST, SIGNATURE)
    )


def safe_relpath(bundle: str | os.PathLike, rel: Any) -> str:
    """``rel`` if it names a place inside the bundle: relative, ``/``-separated, no ``..``.

    Raises:
        BundleError: an absolute path, a ``..`` or empty part, a backslash or a NUL, naming the
            bundle and the path (a manifest is untrusted until its paths are checked).
    """
    bad = (
        not isinstance(rel, str)
        or not rel
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or (len(rel) > 1 and rel[1] == ":")  # a Windows drive
        or any(part in ("", ".", "..") for part in rel.split("/"))
    )
    if bad:
        raise BundleError(f"bundle {bundle}: manifest path {rel!r} points outside the bundle; refused")
    return rel


def _inside(root: Path, rel: str) -> Path:
    """``root / rel``, refused when a symlink on the way leads out of the bundle."""
    p = root / safe_relpath(root, rel)
    real = p.resolve()
    if not real.is_relative_to(root.resolve()):
        raise BundleError(f"bundle {root}: {rel} is a link to a place outside the bundle; refused")
    return p


def _check_paths(bundle: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise BundleError(f"bundle {bundle}: the manifest's files must be a mapping of path to sha256")
    for f in files:
        safe_relpath(bundle, f)
    for name, info in (manifest.get("components") or {}).items():
        for k in ("file", "table", "tokenizer"):
            if isinstance(info, dict) and k in info:
                try:
                    safe_relpath(bundle, info[k])
                except BundleError as e:
                    raise BundleError(f"{e} (component {name!r}, {k})") from None


def _write_local(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def _check_signature(bundle: str | os.PathLike, raw: bytes, sig: bytes | None, keys: BundleKeys) -> None:
    if why := keys.check(raw, sig):
        raise BundleError(f"bundle {bundle}: {why}; refused")


def write_mil_table(path: str | os.PathLike, table: np.ndarray) -> None:
    """The release's ``MIL_weights.csv`` layout: ``Section,<11 views>``, one row per MIL section."""
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (len(MIL_SECTIONS), len(VIEWS)):
        raise ValueError(f"MIL table must be {len(MIL_SECTIONS)} x {len(VIEWS)}, got {table.shape}")
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Section", *VIEWS])
        for s, row in zip(MIL_SECTIONS, table, strict=True):
            # 9 significant digits round-trip a float32 exactly (the release's table must survive).
            w.writerow([s, *(f"{x:.9g}" for x in row)])


def read_mil_table(path: str | os.PathLike) -> np.ndarray:
    """Read a section x view table (ours or the release's ``MIL_weights.csv``) in MIL_SECTIONS x VIEWS order.

    Raises:
        BundleError: wrong header, unknown or missing sections, or values outside [0, 1].
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][0] != "Section" or rows[0][1:] != list(VIEWS):
        raise BundleError(
            f"{path}: header must be Section,{','.join(VIEWS)}; got {','.join(rows[0]) if rows else '<empty>'}"
        )
    by_section = {}
    for r in rows[1:]:
        if not r:
            continue
        if r[0] not in MIL_SECTIONS:
            raise BundleError(f"{path}: unknown section {r[0]!r}; expected the 15 of {list(MIL_SECTIONS)}")
        vals = [float(x) for x in r[1:]]
        if len(vals) != len(VIEWS) or any(not 0.0 <= v <= 1.0 for v in vals):
            raise BundleError(f"{path}: row {r[0]!r} must have {len(VIEWS)} weights in [0, 1]")
        by_section[r[0]] = vals
    missing = [s for s in MIL_SECTIONS if s not in by_section]
    if missing:
        raise BundleError(f"{path}: sections missing from the table: {missing}")
    return np.array([by_section[s] for s in MIL_SECTIONS], dtype=np.float32)


@dataclass
class BundleWriter:
    """Assemble a bundle in a local staging folder, then commit it (manifest last)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.components: dict[str, Any] = {}

    def save_module(
        self, name: str, module: torch.nn.Module, *, model: str, overrides: Mapping[str, Any] | None = None
    ) -> None:
        """Store a model's weights (safetensors) and how to rebuild it (registry name + builder args)."""
        # safetensors refuses tensors that share storage (BERT ties its decoder to the word
        # embeddings): store each as its own copy; loading restores the tie through the module.
        state, seen = {}, set()
        for k, v in module.state_dict().items():
            t = v.detach().cpu()
            ptr = t.untyped_storage().data_ptr() if t.numel() else None
            state[k] = t.clone().contiguous() if ptr in seen else t.contiguous()
            if ptr is not None:
                seen.add(ptr)
        save_file(state, str(self.root / f"{name}.safetensors"))
        self.components[name] = {
            "model": model,
            "overrides": dict(overrides or {}),
            "file": f"{name}.safetensors",
        }

    def add_component(self, name: str, info: Mapping[str, Any]) -> None:
        self.components[name] = dict(info)

    def commit(
        self,
        *,
        spec: Mapping[str, Any],
        config: Mapping[str, Any] | None,
        extra: Mapping[str, Any] | None = None,
        keys: BundleKeys | None = None,
    ) -> Path:
        """Write preprocess.json and the manifest (with every file's sha256); returns the root.

        With a signing key (``keys``, default: the environment's), ``manifest.sig`` is written
        just before the manifest; without one, a signature left from an earlier commit is removed.
        """
        (self.root / "preprocess.json").write_text(json.dumps(dict(spec), indent=2))
        if config is not None:
            import yaml

            (self.root / "config.yaml").write_text(yaml.safe_dump(dict(config), sort_keys=False))
        manifest = {
            "format": "echoprime-bundle",
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {
                "echoprime": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "components": self.components,
            "spec": dict(spec),
            "label_sets": {
                "views": list(VIEWS),
                "sections": list(SECTIONS),
                "mil_sections": list(MIL_SECTIONS),
                "phenotypes": list(PHENOTYPE_NAMES),
            },
            "extra": dict(extra or {}),
            "files": {f: sha256_file(self.root / f) for f in _files(self.root)},
        }
        raw = json.dumps(manifest, indent=2).encode()
        keys = BundleKeys.from_env() if keys is None else keys
        if keys.can_sign:
            _write_local(self.root / SIGNATURE, keys.sign(raw))
        else:
            (self.root / SIGNATURE).unlink(missing_ok=True)
        tmp = self.root / (MANIFEST + ".tmp")
        tmp.write_bytes(raw)
        tmp.replace(self.root / MANIFEST)
        return self.root


def publish(local_root: str | os.PathLike, uri: str) -> str:
    """Copy a committed local bundle to ``uri`` (local folder or s3://), manifest last."""
    src = Path(local_root)
    if not storage.is_s3(uri):
        dst = Path(uri)
        if dst.resolve() == src.resolve():
            return str(dst)
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=lambda d, names: [MANIFEST] if Path(d) == src else [])
        shutil.copy2(src / MANIFEST, dst / MANIFEST)
        return str(dst)
    loc = storage.locate(uri)
    signed = [SIGNATURE] if (src / SIGNATURE).is_file() else []
    for f in [*_files(src), *signed]:
        storage.write_bytes(loc.join(f).uri, (src / f).read_bytes())
    storage.write_bytes(loc.join(MANIFEST).uri, (src / MANIFEST).read_bytes())
    return loc.uri


def fetch(uri: str, cache_dir: str | os.PathLike | None = None, *, keys: BundleKeys | None = None) -> Path:
    """A local copy of a bundle: the folder itself, or an ``s3://`` bundle downloaded to a cache
    keyed by its manifest's hash (downloaded once per machine).

    An ``s3://`` manifest is checked before any file is fetched (its paths stay inside the bundle;
    its signature, when a key is configured) and every file against its sha256 before it enters
    the cache, so the cache never holds an unchecked bundle. A local folder is checked by
    :func:`read_manifest`.

    Raises:
        BundleError: no manifest, a path outside the bundle, a bad or missing signature, or a
            file that does not match its hash, naming the bundle and the file.
    """
    if not storage.is_s3(uri):
        return Path(uri)
    keys = BundleKeys.from_env() if keys is None else keys
    loc = storage.locate(uri)
    man_uri = loc.join(MANIFEST).uri
    if not storage.exists(man_uri):
        raise BundleError(f"bundle {uri}: {MANIFEST} is missing (not a bundle, or its upload did not finish)")
    raw = storage.read_bytes(man_uri)
    sig_uri = loc.join(SIGNATURE).uri
    sig = storage.read_bytes(sig_uri) if storage.exists(sig_uri) else None
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BundleError(f"bundle {uri}: {MANIFEST} is not valid JSON ({e})") from None
    _check_paths(uri, manifest)
    _check_signature(uri, raw, sig, keys)
    key = hashlib.sha256(raw).hexdigest()[:16]
    base = (Path(cache_dir) if cache_dir else cache_root()) / "bundles" / key
    if (base / MANIFEST).is_file():
        # The files were checked when cached; the signature may have been added since.
        if sig is not None:
            _write_local(base / SIGNATURE, sig)
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bundle-", dir=base.parent))
    try:
        for f, digest in manifest.get("files", {}).items():
            data = storage.read_bytes(loc.join(f).uri)
            if hashlib.sha256(data).hexdigest() != digest:
                raise BundleError(
                    f"bundle {uri}: file {f} does not match its sha256 in the manifest (tampered or corrupted)"
                )
            p = tmp / f
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        if sig is not None:
            (tmp / SIGNATURE).write_bytes(sig)
        (tmp / MANIFEST).write_bytes(raw)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if base.exists():
        shutil.rmtree(tmp)
    else:
        tmp.replace(base)
    return base


def read_manifest(
    root: str | os.PathLike, *, verify: bool = True, keys: BundleKeys | None = None
) -> dict[str, Any]:
    """Read (and by default verify) a local bundle's manifest.

    Its paths are always checked (none may leave the bundle) and, when a bundle key is configured
    (``keys``, default: the environment's; echoprime.signing), its signature; ``verify`` adds
    every file's sha256 (the slow part: skip it only right after a verified read). A file this
    machine hashed before and that has not changed since is not hashed again
    (:class:`VerifiedFiles`; ``ECHOPRIME_VERIFY=always`` hashes every time).

    Raises:
        BundleError: missing manifest, unknown format, a path outside the bundle, an unsigned
            bundle or a signature that does not match (with a key configured), a listed file
            missing, an unlisted file, or a file whose sha256 differs from the manifest
            (tampered or corrupted), naming the bundle and the file.
    """
    root = Path(root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"bundle {root}: {MANIFEST} is missing (not a bundle, or it was never committed)")
    raw = mpath.read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as e:
        raise BundleError(f"bundle {root}: {MANIFEST} is not valid JSON ({e})") from None
    if manifest.get("format") != "echoprime-bundle" or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"bundle {root}: format {manifest.get('format')!r} v{manifest.get('format_version')} is not "
            f"echoprime-bundle v{FORMAT_VERSION}"
        )
    _check_paths(root, manifest)
    keys = BundleKeys.from_env() if keys is None else keys
    sig = (root / SIGNATURE).read_bytes() if (root / SIGNATURE).is_file() else None
    _check_signature(root, raw, sig, keys)
    if verify:
        listed = manifest.get("files", {})
        verified = VerifiedFiles()
        for f, digest in listed.items():
            p = _inside(root, f)
            if not p.is_file():
                raise BundleError(f"bundle {root}: file {f} listed in the manifest is missing")
            if not verified.matches(p, digest):
                raise BundleError(
                    f"bundle {root}: file {f} does not match its sha256 in the manifest (tampered or corrupted)"
                )
        verified.save()
        extra = sorted(set(_files(root)) - set(listed))
        if extra:
            raise BundleError(
                f"bundle {root}: files not in the manifest: {extra[:5]} (a bundle is immutable once committed)"
            )
        for name, info in manifest.get("components", {}).items():
            for k in ("file", "table"):
                if isinstance(info, dict) and k in info and info[k] not in listed:
                    raise BundleError(
                        f"bundle {root}: component {name!r} names {k} {info[k]!r}, which the manifest does not list"
                    )
    return manifest


def sign_bundle(uri: str | os.PathLike, keys: BundleKeys | None = None) -> str:
    """Sign a committed bundle (local folder or ``s3://``) after checking every file's hash:
    writes ``manifest.sig`` beside its manifest. Returns the signature's location.

    Raises:
        ValueError: no signing key configured.
        BundleError: the bundle fails its checks (an unsigned or re-signed bundle is checked
            without its old signature).
    """
    keys = BundleKeys.from_env() if keys is None else keys
    if not keys.can_sign:
        keys.sign(b"")  # raises, naming the variables to set
    unsigned = BundleKeys()
    local = fetch(str(uri), keys=unsigned)
    read_manifest(local, verify=True, keys=unsigned)
    sig = keys.sign((local / MANIFEST).read_bytes())
    if storage.is_s3(str(uri)):
        target = storage.locate(str(uri)).join(SIGNATURE).uri
        storage.write_bytes(target, sig)
        _write_local(local / SIGNATURE, sig)
        return target
    _write_local(local / SIGNATURE, sig)
    return str(local / SIGNATURE)


def load_module(root: Path, info: Mapping[str, Any]) -> torch.nn.Module:
    """Rebuild a component from its registry name and overrides, then load its weights strictly."""
    from echoprime.models import create_model
    from echoprime.models.factory import create_text_encoder

    name = info["model"]

    def build() -> torch.nn.Module:
        try:
            return create_model(name, **info.get("overrides", {}))
        except ValueError:
            return create_text_encoder(name, **info.get("overrides", {}))

    state = load_file(str(_inside(root, info["file"])))
    if info.get("prefix"):
        # Several components can share one weights file (the pretrained CLIP holds both towers).
        pre = info["prefix"]
        state = {k[len(pre) :]: v for k, v in state.items() if k.startswith(pre)}
    # Built on the meta device, then given the file's tensors: a release-size tower's random
    # initialisation, thrown away by the load, cost seconds of start-up (docs/benchmarks.md).
    # A module with a buffer its weights file does not hold (made at construction, not saved:
    # BERT's position ids) is built for real.
    with torch.device("meta"):
        module = build()
    want = module.state_dict()
    assign = all(n in want for n, _ in module.named_buffers())
    if not assign:
        module = build()
    state = {
        k: v.to(want[k].dtype) if k in want and v.dtype != want[k].dtype else v for k, v in state.items()
    }
    # Parameters the module shares between places (BERT ties its decoder to the word embeddings):
    # assigning gives each place the file's own tensor, so the ties are made again after it.
    ties: dict[int, list[str]] = {}
    for n, prm in module.named_parameters(remove_duplicate=False) if assign else ():
        ties.setdefault(id(prm), []).append(n)
    missing, unexpected = module.load_state_dict(state, strict=False, assign=assign)
    if missing or unexpected:
        raise BundleError(
            f"bundle {root}: {info['file']} does not fit model {name!r}: missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )
    for first, *others in (g for g in ties.values() if len(g) > 1):
        shared = module.get_parameter(first)
        for n in others:
            owner, _, leaf = n.rpartition(".")
            setattr(module.get_submodule(owner), leaf, shared)
    return module.eval()


def assemble_bundle(
    out: str | os.PathLike,
    *,
    spec: Mapping[str, Any],
    video_encoder: tuple[torch.nn.Module, str, Mapping[str, Any]],
    view_classifier: tuple[torch.nn.Module, str, Mapping[str, Any]],
    bank: Any,
    mil_table: np.ndarray,
    mil: tuple[torch.nn.Module, str, Mapping[str, Any]] | None = None,
    text_encoder: tuple[torch.nn.Module, str, Mapping[str, Any]] | None = None,
    tokenizer_dir: str | os.PathLike | None = None,
    thresholds: Any = None,
    config: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    video_normalize: bool = True,
    calibration: Any = None,
) -> Path:
    """Write a complete bundle into the empty or new local folder ``out`` (manifest last).

    Each model is ``(module, registry name, builder overrides)``. ``mil`` (learned attention) is
    optional; the ``mil_table`` is always written (the release's form, and the fallback).
    ``video_normalize=False`` records that clip embeddings are pooled raw (the release's way).

    Raises:
        BundleError: ``out`` already holds a committed bundle (bundles are immutable; write a new
            one), or holds other files (never deleted: a bundle goes into a new or empty folder).
    """
    root = Path(out)
    if (root / MANIFEST).exists():
        raise BundleError(f"{root} already holds a bundle; bundles are immutable: write to a new folder")
    if root.exists() and any(root.iterdir()):
        raise BundleError(f"{root} is not empty; write a bundle into a new or empty folder")
    w = BundleWriter(root)
    w.save_module("video_encoder", video_encoder[0], model=video_encoder[1], overrides=video_encoder[2])
    w.components["video_encoder"]["normalize"] = bool(video_normalize)
    w.save_module(
        "view_classifier", view_classifier[0], model=view_classifier[1], overrides=view_classifier[2]
    )
    write_mil_table(root / "mil_table.csv", mil_table)
    if mil is not None:
        w.save_module("mil", mil[0], model=mil[1], overrides=mil[2])
        w.components["mil"].update(kind="learned", table="mil_table.csv")
    else:
        w.add_component("mil", {"kind": "table", "table": "mil_table.csv"})
    if text_encoder is not None:
        if tokenizer_dir is None:
            raise ValueError("a text encoder needs its tokenizer_dir")
        w.save_module("text_encoder", text_encoder[0], model=text_encoder[1], overrides=text_encoder[2])
        shutil.copytree(tokenizer_dir, root / "tokenizer")
    bank.save(root / "bank")
    if thresholds is not None:
        thresholds.to_json(root / "thresholds.json")
    if calibration is not None:
        calibration.to_json(root / "calibration.json")
    return w.commit(spec=spec, config=config, extra=extra)
