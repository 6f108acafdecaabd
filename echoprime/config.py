"""One typed configuration for every command, loaded from YAML with ``key=value`` overrides.

Every section is a frozen pydantic model that forbids unknown keys, so a typo, a wrong type or
an impossible value is rejected before any work starts, with a message that names the key, the
file and what is allowed. The resolved config is written next to every artifact a command
produces (``EchoPrimeConfig.save``).

Example::

    cfg = EchoPrimeConfig.from_yaml("configs/tiny-cpu.yaml", ["train.epochs=3", "seed=1"])
    cfg.train.epochs  # 3
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from echoprime.taxonomy import RELEASE_MEAN, RELEASE_STD


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says which key, where, and what is allowed."""


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RayCfg(_Cfg):
    """How a command starts or joins Ray."""

    address: str | None = None
    """``None``/``"local"`` starts a local Ray owned by the command; ``"auto"`` or ``ray://...`` joins one."""
    num_cpus: int | None = Field(default=None, ge=1)
    """Logical CPUs of a local Ray (more than the cores is fine; Ray Data + Train need headroom)."""
    object_store_mb: int = Field(default=512, ge=64)
    data_no_progress_timeout_s: int = Field(default=180, ge=10)
    """Ray Data fails a stalled pipeline after this long instead of hanging."""
    log_to_driver: bool = False
    """Stream every worker's log lines to the console (they are always in Ray's session logs);
    errors raised in workers reach the driver either way."""
    resource_wait_s: int = Field(default=120, ge=1)
    """How long a job waits for the CPUs/GPUs it asked for before failing with a clear message."""


class SynthCfg(_Cfg):
    """The synthetic cohort (``echoprime synth`` and the quickstart's first stage)."""

    studies: int = Field(default=120, ge=1)
    min_videos: int = Field(default=6, ge=1)
    max_videos: int = Field(default=20, ge=1)
    frames: int = Field(default=32, ge=2)
    size: int = Field(default=112, ge=16, le=1024)
    format: Literal["mp4", "dicom", "both"] = "mp4"
    test_studies: int = Field(default=0, ge=0)
    """0: the ``studies`` are split train/val/test (0.7/0.15/0.15) by patient. > 0: the cohort also
    holds this many test studies from a separate seed namespace (ids ``s{seed}_t{index:06d}``,
    all split ``test``; no ordinary study of any seed, nor a synthetic stream, can draw them) and
    the ``studies`` are split train/val only (docs/synthetic-data.md)."""
    label_only: bool = False
    """Write no reports: the studies table holds each study's findings as labels instead (the
    21 phenotypes, the grades and the extra measurements), as a labels-only archive would: a
    stand-in for the public datasets and for ``echoprime finetune`` (docs/training.md)."""

    @model_validator(mode="after")
    def _videos(self) -> SynthCfg:
        if self.min_videos > self.max_videos:
            raise ValueError(f"min_videos ({self.min_videos}) must be <= max_videos ({self.max_videos})")
        return self


class DataCfg(_Cfg):
    """The preprocessing spec; it travels with the weights (bundle manifest)."""

    size: int = Field(default=224, ge=8, le=1024)
    """Side of the square model input, in pixels."""
    frames: int = Field(default=16, ge=1, le=256)
    """Frames per clip given to the video encoder."""
    stride: int = Field(default=2, ge=1, le=16)
    """Take every ``stride``-th frame of the first ``frames * stride``."""
    mean: tuple[float, float, float] = RELEASE_MEAN
    std: tuple[float, float, float] = RELEASE_STD
    crop_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    mask_sector: bool = True

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError(f"every std must be > 0, got {list(v)}")
        return v


class IngestCfg(_Cfg):
    """``echoprime ingest``: archive -> Parquet study shards."""

    shard_rows: int = Field(default=256, ge=1)
    """Upper bound on rows per Parquet shard file."""
    clips_per_video: int = Field(default=1, ge=1)
    max_frames: int = Field(default=512, ge=1)
    """Frames read per file at most (a longer cine is cut, a header claiming more is not trusted)."""
    max_pixels: int = Field(default=4096 * 4096, ge=1)
    """Refuse frames larger than this (rows x columns) before decoding."""
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    decode_actors: int = Field(default=2, ge=1)
    deidentify: bool = True
    """Shards hold keyed pseudonyms of study ids and file paths, never the archive's own
    (echoprime/data/deid.py, docs/privacy.md); ``false`` only for archives that hold no
    identifiers (public data sets)."""

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in v) or not math.isclose(sum(v), 1.0, abs_tol=1e-6):
            raise ValueError(f"train/val/test fractions must be >= 0 and sum to 1, got {list(v)}")
        return v


class ModelCfg(_Cfg):
    """Which towers to build (names from ``echoprime.models.list_models()``)."""

    video_encoder: str = "echoprime_mvit_v2_s"
    text_encoder: str = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    """A registry name (``tiny_bert``) or a BERT-family name / local path (loaded offline only)."""
    view_classifier: str = "echoprime_convnext_base_views"
    embed_dim: int = Field(default=512, ge=8)
    max_tokens: int = Field(default=512, ge=16, le=8192)
    section_type_ids: bool = False
    """Feed each token's report section as token_type_ids (needs type_vocab_size >= 17)."""
    tokenizer_vocab: int = Field(default=2000, ge=100)
    """Vocabulary size when a tokenizer is trained on the report corpus (tiny text encoder)."""
    video_options: dict[str, Any] = Field(default_factory=dict)
    """More arguments of the video tower's builder, e.g. ``{pool: spatial, dropout: 0.3}`` for
    ``echoprime_tiny`` (docs/learning.md); they travel with the weights in the bundle's config."""
    text_options: dict[str, Any] = Field(default_factory=dict)
    """More arguments of the text tower's builder, e.g. ``{token_dropout: 0.3}`` for ``tiny_bag``."""
    init_logit_scale: float = Field(default=math.log(1 / 0.07))
    max_logit_scale: float = Field(default=math.log(100.0))
    number_step: float = Field(default=0.0, ge=0)
    """Round every number of a report to this step before the text tower reads it (the report
    stays as written): exact EF / PASP / heart-rate tokens let a small text tower recognise each
    report instead of grouping reports by finding (docs/learning.md). 0: numbers as written."""
    label_heads: Literal["none", "separate", "shared"] = "none"
    """Linear heads that read the report's findings off each tower's joint features, for
    ``train.label_weight_video`` / ``label_weight_text`` (``separate``: one per tower)."""


class TrainCfg(_Cfg):
    """Contrastive pretraining on Ray Train."""

    num_workers: int = Field(default=2, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=32, ge=2)
    """Per-worker batch size (clips)."""
    epochs: int = Field(default=10, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    """End pretraining after this many optimizer steps (the last epoch may be partial); the
    learning-rate schedule spans them."""
    lr: float = Field(default=1e-3, gt=0)
    min_lr: float = Field(default=1e-5, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_steps: int = Field(default=20, ge=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False
    grad_clip: float | None = Field(default=1.0, gt=0)
    checkpoint_every_steps: int = Field(default=200, ge=1)
    keep_checkpoints: int = Field(default=2, ge=1)
    max_failures: int = Field(default=1, ge=0)
    storage_path: str = "./runs"
    """Local folder or ``s3://bucket/prefix`` for checkpoints."""
    run_name: str = "pretrain"
    time_budget_s: float | None = Field(default=None, gt=0)
    """Stop training after this many seconds (epoch granularity), for bounded demos."""
    materialize: Literal["auto", "always", "never"] = "auto"
    """Hold the tokenised training set in the object store (``auto``: when it fits in a third of it);
    ``never`` streams shards from storage every epoch (archives larger than the cluster's memory)."""
    shuffle_buffer: int = Field(default=256, ge=0)
    """Rows in each worker's local shuffle buffer (0: no shuffle)."""
    brightness: float = Field(default=0.1, ge=0)
    contrast: float = Field(default=0.1, ge=0, lt=1)
    """Per-clip intensity jitter at training (gain differs between acquisitions)."""
    shift: int = Field(default=0, ge=0)
    """Random translation of each training clip by up to this many pixels (breaks the per-clip
    fan-geometry fingerprint a small model memorises; docs/learning.md)."""
    noise: float = Field(default=0.0, ge=0)
    """Std of additive Gaussian noise on training clips (normalised units)."""
    reverse: float = Field(default=0.0, ge=0, le=1)
    """Probability of playing a training clip backwards."""
    label_weight_video: float = Field(default=0.0, ge=0)
    """Weight of the video head's label loss (the report's findings, docs/learning.md); 0 = the
    paper's contrastive objective alone. Needs ``model.label_heads``."""
    label_pool: Literal["clip", "study"] = "clip"
    """``study``: the video head's label loss is on each study's mean logits over its clips in
    the batch (labels are the study's; a clip shows only its view's findings), with batches that
    keep a study's clips together (``shuffle_buffer: 0``; the stream and shards are written
    study by study); ``clip``: every clip predicts every label."""
    label_weight_text: float = Field(default=0.0, ge=0)
    """Weight of the text head's label loss: organises the report space, and so the bank, by the
    findings. Needs ``model.label_heads``."""
    init: str | None = None
    """A bundle (folder or ``s3://``) whose towers and tokenizer start the run instead of random
    weights (``echoprime pretrain --init``; echoprime.training.finetune): our own, or a published
    release converted with ``echoprime import-release``. Its spec, towers and embedding width
    must match the config and shards. A checkpoint of the run (``--resume``) takes precedence."""
    text_trainable_layers: int | None = Field(default=None, ge=0)
    """None: the whole text tower trains; 0: frozen; n: only its last n layers (and what sits above them)."""
    video_trainable_layers: int | None = Field(default=None, ge=0)
    """The video tower, likewise (``echoprime finetune --unfreeze``: its head's run starts frozen, 0)."""
    layer_decay: float = Field(default=1.0, gt=0, le=1)
    """Layer-wise learning-rate decay: layer i of L learns at ``lr * layer_decay ** (L - i)`` (1: off)."""
    early_stop_patience: int | None = Field(default=None, ge=1)
    """Stop after this many epochs without a better ``early_stop_metric`` on the val split."""
    early_stop_metric: str = "val_v2t_r@10"
    """A validation number of the run's history (``val_v2t_r@1``, ``val_t2v_r@10``, ...)."""
    label_grades: list[str] = Field(default_factory=list)
    """Graded phenotypes (``echoprime.taxonomy.GRADE_SCALES``; ``[all]`` for every one) whose label
    column learns the report's grade as a squared-error target instead of the yes/no
    (echoprime.training.labels; docs/learning.md, RV systolic function)."""
    label_grade_weight: float = Field(default=1.0, ge=0)
    """Weight of those columns in both heads' label losses."""

    @field_validator("label_grades")
    @classmethod
    def _graded(cls, v: list[str]) -> list[str]:
        from echoprime.taxonomy import GRADE_SCALES

        if v == ["all"]:
            return list(GRADE_SCALES)
        if unknown := [x for x in v if x not in GRADE_SCALES]:
            raise ValueError(
                f"label_grades: {unknown} are not graded phenotypes; expected some of {list(GRADE_SCALES)} or [all]"
            )
        return v

    label_balance: float = Field(default=0.0, ge=0)
    """Rare findings count more in the video head's loss: each binary's positive entries weigh
    negatives / positives among the labels seen so far in training, capped at this value (0 or
    1: unweighted). Aimed at findings like aortic stenosis (~12 % of studies) that the
    unweighted loss lets the video embedding ignore (docs/learning.md)."""


class StreamCfg(_Cfg):
    """Pretraining on synthetic studies rendered on the fly (``echoprime.data.stream``)."""

    studies: int = Field(default=0, ge=0)
    """0: pretrain on the shards' train split; > 0: on this many studies rendered on the fly
    (shape from ``synth``, clips at the shards' spec) for ``train.epochs`` epochs, held in the
    object store like a small train split (``train.materialize``) or rendered again each epoch."""
    seed: int = Field(default=1, ge=0)
    """The stream's seed; must differ from the top-level ``seed`` of the stored cohort, whose
    validation studies it would otherwise replay."""
    studies_per_task: int = Field(default=4, ge=1)
    """Studies rendered by one Ray Data task (one block of rows)."""
    bank_studies: int = Field(default=0, ge=0)
    """The report bank also holds the reports (and labels) of this many stream studies, besides
    the train split's: the kNN vote has more neighbours to choose from. Reports only: nothing is
    rendered (seconds for thousands). Independent of ``studies``."""
    probe_studies: int = Field(default=0, ge=0)
    """``echoprime evaluate`` fits its linear probes (and the hidden diagnoses' probes) on the
    train split plus this many stream studies, rendered and embedded: a probe is fitted on
    training data, and ~250 stored studies are too few for it (docs/learning.md). The test
    split stays the only thing scored."""


class ViewsCfg(_Cfg):
    """View classifier training (``echoprime train-views``)."""

    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    num_workers: int = Field(default=1, ge=1)
    stream_studies: int = Field(default=0, ge=0)
    """0: train on the shards' train split; > 0: on this many synthetic stream studies rendered
    on the fly (``stream.seed``, as pretraining's stream; validation stays the shards')."""


class MilCfg(_Cfg):
    """Anatomical attention fitting (``echoprime fit-mil``)."""

    mode: Literal["learned", "table", "uniform"] = "learned"
    """``learned``: fit ``model``; ``table``: the generator's visibility table (synthetic data only);
    ``uniform``: every video weighs the same."""
    model: Literal["view_table_mil", "section_attention_mil"] = "view_table_mil"
    """A learned section x view table (generalises from few studies), or gated attention that also
    sees each video's content (needs many studies; docs/interpretation.md)."""
    epochs: int = Field(default=30, ge=1)
    lr: float = Field(default=0.05, gt=0)
    hidden: int = Field(default=128, ge=4)
    stream_studies: int = Field(default=0, ge=0)
    """Fit on this many rendered synthetic studies (``stream.seed``, as pretraining's stream)
    instead of the shards' train split; 0: the train split. Validation stays the shards'."""


class BankCfg(_Cfg):
    """The candidate report bank (``echoprime build-bank``)."""

    index: Literal["auto", "flat", "ivfpq"] = "auto"
    ivf_threshold: int = Field(default=500_000, ge=1)
    """Above this many reports ``auto`` builds an IVF/PQ index instead of exact search."""
    batch_size: int = Field(default=64, ge=1)
    encode_actors: int = Field(default=1, ge=1)


class InterpretCfg(_Cfg):
    k: int = Field(default=50, ge=1)
    batch_size: int = Field(default=50, ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    """The towers' arithmetic in batch-interpret (StudyInterpreter's ``precision``): ``bf16``
    autocast is faster on a GPU or a CPU with AVX512-BF16 / AMX, its answers can differ slightly."""


class ServeCfg(_Cfg):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_upload_mb: int = Field(default=512, ge=1)
    max_files: int = Field(default=100, ge=1)
    max_frames_per_file: int = Field(default=1024, ge=1)
    request_timeout_s: float = Field(default=120.0, gt=0)
    body_timeout_s: float = Field(default=60.0, gt=0)
    """A request body must have arrived within this long (and within request_timeout_s), else 408."""
    body_idle_timeout_s: float = Field(default=15.0, gt=0)
    """Longest wait for the next piece of a request body, else 408 (a stalled or trickling client)."""
    max_concurrent_uploads: int = Field(default=16, ge=1)
    """Requests with a body in one ingress replica at once (read and worked on); more get 503."""
    allowed_hosts: tuple[str, ...] | None = None
    """Host names the server answers (421 otherwise); ``None``: the loopback names and ``host``
    (plus this machine's name when ``host`` is 0.0.0.0); ``["*"]``: any (echoprime/api/security.py)."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (``https://viewer.example.org``) whose browser pages may call the API besides the
    server's own (403 otherwise)."""
    allow_no_auth_off_loopback: bool = False
    """Allow serving without an API key on a non-loopback ``host`` (refused otherwise; warned)."""


class EchoPrimeConfig(_Cfg):
    """The whole configuration. Each command reads the sections it needs."""

    name: str = "echoprime"
    seed: int = 0
    ray: RayCfg = RayCfg()
    synth: SynthCfg = SynthCfg()
    data: DataCfg = DataCfg()
    ingest: IngestCfg = IngestCfg()
    model: ModelCfg = ModelCfg()
    train: TrainCfg = TrainCfg()
    stream: StreamCfg = StreamCfg()
    views: ViewsCfg = ViewsCfg()
    mil: MilCfg = MilCfg()
    bank: BankCfg = BankCfg()
    interpret: InterpretCfg = InterpretCfg()
    serve: ServeCfg = ServeCfg()

    @model_validator(mode="after")
    def _stream_seed(self) -> EchoPrimeConfig:
        uses = (
            self.stream.studies
            or self.stream.bank_studies
            or self.stream.probe_studies
            or self.views.stream_studies
            or self.mil.stream_studies
        )
        if uses and self.stream.seed == self.seed:
            raise ValueError(
                f"stream.seed ({self.stream.seed}) equals seed ({self.seed}): the stream would replay the "
                "stored cohort's studies, validation ones included; choose another stream.seed"
            )
        return self

    @model_validator(mode="after")
    def _label_heads(self) -> EchoPrimeConfig:
        weights = {
            "train.label_weight_video": self.train.label_weight_video,
            "train.label_weight_text": self.train.label_weight_text,
        }
        if any(w > 0 for w in weights.values()) and self.model.label_heads == "none":
            raise ValueError(
                f"{', '.join(f'{k}={v}' for k, v in weights.items() if v > 0)} needs label heads to train: "
                "set model.label_heads to separate or shared"
            )
        return self

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> EchoPrimeConfig:
        """Validate a plain dict; errors name each bad key, the source and what is allowed."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}: the top level must be a mapping of sections, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_explain(e, source)) from None

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()
    ) -> EchoPrimeConfig:
        """Load ``path`` (or the defaults when ``None``) and apply ``key=value`` overrides.

        Raises:
            ConfigError: missing/unreadable file, bad YAML, unknown key, wrong type, impossible value.
        """
        data: dict[str, Any] = {}
        source = "<defaults>"
        if path is not None:
            p = Path(path)
            source = str(p)
            if not p.is_file():
                raise ConfigError(
                    f"config file not found: {p} (pass an existing YAML file, e.g. configs/tiny-cpu.yaml)"
                )
            try:
                loaded = yaml.safe_load(p.read_text())
            except (OSError, yaml.YAMLError) as e:
                raise ConfigError(f"{p}: cannot read YAML: {e}") from None
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(
                    f"{p}: the top level must be a mapping of sections, got {type(loaded).__name__}"
                )
            data = loaded
        for ov in overrides:
            apply_override(data, ov)
        if overrides:
            source = f"{source} with overrides {list(overrides)}"
        return cls.from_dict(data, source)

    # ----------------------------------------------------------------------------- saving
    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, directory: str | os.PathLike, name: str = "config.yaml") -> Path:
        """Write the resolved config next to an artifact; returns the file written."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = d / name
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(self.to_yaml())
        tmp.replace(out)
        return out

    def replace(self, **sections: Any) -> EchoPrimeConfig:
        """A copy with whole sections or top-level values replaced (validated again)."""
        d = self.to_dict()
        for k, v in sections.items():
            d[k] = (
                v.to_dict()
                if isinstance(v, EchoPrimeConfig)
                else (json.loads(v.model_dump_json()) if isinstance(v, BaseModel) else v)
            )
        return EchoPrimeConfig.from_dict(d, "<replace>")


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as a YAML scalar/list.

    Raises:
        ConfigError: the override is not of the ``key=value`` form.
    """
    if "=" not in override:
        raise ConfigError(f"override {override!r} is not of the form key=value (e.g. train.epochs=3)")
    key, raw = override.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r} has an empty key (e.g. train.epochs=3)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = EchoPrimeConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return sorted(model.model_fields)


def _explain(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(x) for x in loc) or "<top level>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            lines.append(f"unknown key {key!r}; allowed here: {', '.join(allowed)}")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) or e["type"] == "value_error" else f" (got {got!r})"
            lines.append(f"{key}: {e['msg']}{got_s}")
    return f"invalid configuration in {source}:\n  " + "\n  ".join(lines)


def load_config(
    path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()
) -> EchoPrimeConfig:
    """Shorthand for :meth:`EchoPrimeConfig.from_yaml`."""
    return EchoPrimeConfig.from_yaml(path, overrides)
