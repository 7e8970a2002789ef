"""Typed training configuration (one dataclass tree for all three stages).

Stage files in ``configs/`` are small YAML deltas over a base (``base: other.yaml``); any key can be
overridden on the command line with ``--set section.key=value``. The resolved config is stored in
every checkpoint so a run can be resumed or audited without the YAML files.
Defaults reproduce the paper-scale recipe of ``method.md`` §6 where it gives a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DataConfig:
    """Aligned HQ faces plus their quality scores; LQ inputs are synthesised on the fly."""

    folders: list[str] = field(default_factory=list)  # image folders, joined in order
    scores_csv: str | None = None  # from `iqpfr score`; None: every face gets `default_score`
    score_column: str | None = None  # None: the CSV's `score` column (or its only numeric one)
    default_score: float | None = None  # used when scores_csv is None or a face is missing from it
    # "rank": replace scores by their percentile rank, so a small set fills every quality bucket
    # (min-max scores of 1k FFHQ faces fall in buckets 3-6 only); "none": use them as given (paper)
    score_transform: Literal["none", "rank"] = "none"
    resolution: int = 512  # faces of any size are resized (area / bicubic) to this
    flip: bool = True
    degradation: str = "large"  # preset of iqpfr.data.degradations for the LQ input
    small_degradation: str = "small"  # preset for stage III's image-loss path
    scale_degradation: bool = True  # presets are for 512 px: scale blur / down-sampling to `resolution`
    color_jitter: bool = False  # colour-enhancement variant (method.md §10)
    gray: bool = False
    num_workers: int = 2
    limit: int = 0  # use only the first N faces (0: all); for smoke runs
    # quality-augmented targets (stages II/III, our addition): CSV `imagename, level, score` of blurred
    # or sharpened copies (scripts/default_model/score_variants.py); with probability
    # target_variant_prob the target is such a copy and the condition its score, the LQ input the face's
    target_variants: str | None = None
    target_variant_prob: float = 0.0


@dataclass
class ModelConfig:
    name: str = "iqpfr-512"  # preset of iqpfr.models.create_model
    overrides: dict = field(default_factory=dict)  # constructor keyword overrides of the preset
    init: str | None = None  # weights to start from (stage I -> II -> III), .safetensors or a run checkpoint
    init_discriminator: str | None = None  # stage III: discriminator of a stage I run checkpoint
    vqgan: str | None = None  # stages II/III: stage-I weights giving the code targets (II: default model.init)
    codes: str | None = None  # precomputed targets (`iqpfr train precompute-codes`); None: on the fly
    alpha: float = 0.8  # HQ+ fusion weight (aesthetic_weight)
    hq_threshold: float = 0.70  # S_thr: the HQ+ codebook sees sample b only if S_b > S_thr


@dataclass
class OptimConfig:
    lr: float = 7e-5
    d_lr: float | None = None  # discriminator learning rate (None: same as lr)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "multistep"] = "cosine"
    period: int = 1_600_000  # cosine period (restarts after it)
    eta_min: float = 6e-5
    milestones: list[int] = field(default_factory=list)  # multistep
    gamma: float = 0.5
    warmup: int = 0  # linear warm-up steps
    grad_clip: float = 0.0  # max global grad norm (0: off)
    # learning-rate factor of the quality embedding (stages II, III): each bucket's row is C*h*w free
    # values trained by a tenth of the samples; 1 suits the paper's 100k+ steps, short runs need more
    quality_embed_lr_scale: float = 1.0


@dataclass
class Stage1Config:
    """Dual-codebook VQGAN (method.md §6.1)."""

    l1_weight: float = 1.0
    perceptual: Literal["auto", "lpips", "pyramid", "none"] = "auto"
    perceptual_weight: float = 1.0
    gan_weight: float = 0.8  # scale of the adaptive weight (lambda_adv)
    disc_start: int = 30_001  # first step with the GAN loss and discriminator updates
    disc_layers: int = 4
    disc_channels: int = 64
    vq_weight: float = 1.0
    hq_vq_weight: float = 1.0
    kmeans_init: bool = False  # initialise both codebooks by k-means on encoder outputs
    kmeans_batches: int = 8
    kmeans_iters: int = 10
    dead_code_every: int = 0  # re-initialise unused codes every N steps (0: off)
    dead_code_min_usage: float = 1.0  # a code used fewer times than this in the window is dead
    # parts of the autoencoder kept fixed ("quantize", "generator"): with both, stage I re-fits only the
    # encoder to an existing codebook and decoder (e.g. to recover code targets for a trained model)
    frozen: list[str] = field(default_factory=list)


@dataclass
class ImageLossConfig:
    """Image losses of ``stage2.targets: image`` (restored face vs GT, method.md §9 plug-and-play)."""

    l1_weight: float = 1.0
    perceptual: Literal["auto", "lpips", "pyramid", "none"] = "auto"
    perceptual_weight: float = 1.0
    # GFPGAN also trains with a GAN loss; off by default: a frozen generator with only the quality
    # adapter trainable gains little from it and it needs a discriminator trained alongside
    gan_weight: float = 0.0  # fixed weight of the hinge generator loss (0: no discriminator at all)
    disc_start: int = 1
    disc_layers: int = 3
    disc_channels: int = 64
    fidelity_w: float = 0.5  # w the network is run at (CodeFormer / IQPFR; GFPGAN ignores it)


@dataclass
class Stage2Config:
    """Quality-conditioned code prediction and discrete quality optimisation (§6.2, §7)."""

    ce_weight: float = 0.5  # per head: 0.5 * CE(common) + 0.5 * CE(HQ+)
    feat_weight: float = 1.0
    quality_weight: float = 0.0  # 0: off (shipped IQPIR YAMLs); method.md default form 0.1 * (1 - q)
    quality_start: int = 100_000
    quality_scorer: str = "face-iqa"  # name for iqpfr.quality.create_scorer
    quality_space: Literal["discrete", "continuous"] = "discrete"  # continuous: ablation, decoder fed lq_feat
    # the quality loss only on samples whose condition is at least this (0: every sample, the paper);
    # with quality-augmented targets, low conditions must be free to ask for a softer face
    quality_min_condition: float = 0.0
    # before step 1, copy the quality-embedding row of the model's default quality (0.9) into every
    # row. Rows start as N(0, 1) noise as large as lq_feat; after a short schedule they are still that
    # noise, which the Transformer learns to ignore. From equal rows, only what the targets tell
    # apart (e.g. quality-augmented copies) makes them differ. No effect on a resumed run.
    quality_rows_reset: bool = False
    # keep the quality rows on a line through the default quality's row: row_k = row_d + o_k * v with
    # o_k = (k - d) / max|k - d| and one learned direction v (after every optimiser step the rows are
    # projected back onto that line; row_d gets no gradient). Starts from equal rows (v = 0), so the
    # output at the default quality never changes, and every sample, whatever its bucket, trains the
    # same direction instead of one of ten independent rows.
    quality_rows_line: bool = False
    # parameter-name prefixes to train (empty: all but the frozen VQGAN parts); ["quality_embed."]
    # tunes only the quality condition of a finished model, leaving what it restores at q untouched
    train_only: list[str] = field(default_factory=list)
    # what stage II fits: "codes" (CE + feat against the VQGAN's codes of the GT face, the recipe
    # above) or "image" (L1 + perceptual (+ optional GAN) of the restored face against the GT face):
    # for networks without a codebook, e.g. GFPGAN, whose original losses are image losses
    targets: Literal["codes", "image"] = "codes"
    image: ImageLossConfig = field(default_factory=ImageLossConfig)


@dataclass
class Stage3Config:
    """Fidelity fusion w (CodeFormer stage III, method.md §6.3), quality condition passed."""

    phase_ends: tuple[int, int, int] = (40_000, 80_000, 120_000)
    w_first: float = 1.0  # w up to phase_ends[0]
    w_later: float = 1.3  # w afterwards
    small_every: int = 15  # after phase_ends[2]: image-loss step every N-th step, otherwise code-only
    # share of image-loss steps fed the large-degradation input instead of the small one (0: CodeFormer);
    # the fusion then also learns to keep identity from the inputs it meets at test time
    image_large_share: float = 0.0
    ce_weight: float = 0.5
    feat_weight: float = 1.0
    l1_weight: float = 1.0
    perceptual: Literal["auto", "lpips", "pyramid", "none"] = "auto"
    perceptual_weight: float = 1.0
    gan_weight: float = 0.1  # scale_adaptive_gan_weight
    disc_start: int = 5_001
    disc_layers: int = 4
    disc_channels: int = 64


@dataclass
class TrainConfig:
    stage: Literal[1, 2, 3] = 1
    run_dir: str = "runs/iqpfr"
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    batch_size: int = 4  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    total_steps: int = 200_000
    ema_decay: float = 0.995
    ema_warmup: bool = False  # decay min(ema_decay, (1+n)/(10+n)): for short runs (not in the paper)
    log_every: int = 100
    sample_every: int = 5_000
    ckpt_every: int = 5_000
    keep_checkpoints: int = 3  # older periodic checkpoints are deleted (0: keep all)
    tensorboard: bool = False
    find_unused_parameters: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    stage3: Stage3Config = field(default_factory=Stage3Config)

    def validate(self) -> None:
        """Raise ConfigError on values that would only fail hours into a run."""
        from iqpfr.config import ConfigError

        if self.batch_size < 1 or self.grad_accum < 1 or self.total_steps < 1:
            raise ConfigError("batch_size, grad_accum and total_steps must be >= 1")
        if not self.data.folders:
            raise ConfigError("data.folders is empty: name at least one folder of aligned HQ faces")
        if self.data.scores_csv is None and self.data.default_score is None:
            raise ConfigError("give data.scores_csv (from `iqpfr score`) or data.default_score")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay must be in [0, 1)")
        if self.stage in (2, 3) and self.model.init is None:
            raise ConfigError(f"stage {self.stage} needs model.init (the previous stage's weights)")
        if self.stage == 3 and self.model.vqgan is None:
            raise ConfigError("stage 3 needs model.vqgan (the stage-I weights that define the code targets)")
        ends = self.stage3.phase_ends
        if not ends[0] <= ends[1] <= ends[2]:
            raise ConfigError("stage3.phase_ends must be non-decreasing")
        if not 0.0 <= self.data.target_variant_prob <= 1.0 or not 0.0 <= self.stage3.image_large_share <= 1.0:
            raise ConfigError("data.target_variant_prob and stage3.image_large_share must be in [0, 1]")
        frozen = set(self.stage1.frozen)
        if not frozen <= {"encoder", "quantize", "generator"} or len(frozen) == 3:
            raise ConfigError(f"stage1.frozen takes some of encoder, quantize, generator (not all), got {sorted(frozen)}")
        if "quantize" in frozen and (self.stage1.kmeans_init or self.stage1.dead_code_every):
            raise ConfigError("stage1.frozen includes quantize: turn off stage1.kmeans_init and stage1.dead_code_every")
        if "generator" in frozen and self.stage1.disc_start <= self.total_steps:
            raise ConfigError("stage1.frozen includes generator: the adaptive GAN weight needs its last layer; "
                              "set stage1.disc_start above total_steps")
        if self.stage == 1 and frozen and self.model.init is None:
            raise ConfigError("stage1.frozen needs model.init (the weights of the parts kept fixed)")
        s2 = self.stage2
        if self.stage == 2 and s2.targets == "image":
            if self.model.codes or s2.quality_rows_reset or s2.quality_rows_line:
                raise ConfigError("stage2.targets=image does not use model.codes, stage2.quality_rows_reset "
                                  "or stage2.quality_rows_line (they belong to code targets)")
            if s2.image.gan_weight > 0 and s2.image.disc_start > self.total_steps:
                raise ConfigError("stage2.image.gan_weight > 0 but stage2.image.disc_start is after total_steps")
        if self.data.target_variant_prob > 0 and not self.data.target_variants:
            raise ConfigError("data.target_variant_prob > 0 needs data.target_variants (scripts/default_model/score_variants.py)")


def load_train_config(path: str | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load and validate a TrainConfig from YAML (with ``base:`` chains) and ``key=value`` overrides."""
    from iqpfr.config import load_config

    cfg = load_config(TrainConfig, path, overrides)
    cfg.validate()
    return cfg
