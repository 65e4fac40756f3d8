"""Train the colorectal epithelium / tumour segmentation model on the EBHI-Seg subset.

Reproducible: one seed drives the case hold-out, the weight init and every augmentation draw.
Per epoch it logs the loss and the Dice on cases held out of ``train``; ``val`` is touched once,
at the end, for the numbers that go into the card. The output folder holds ``weights.pt``
(float16 state_dict), ``metrics.json`` and a filled-in ``card.toml``: publishing a model is
copying that folder under ``models/<name>/``.
"""

from __future__ import annotations

import json
import logging
import random
import time
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.augment import color_jitter, geometric, hed_jitter
from models.card import ClassInfo, ModelCard, Quality, parse_card
from models.data import Dataset, load_ebhi
from models.errors import TrainingConfigError
from models.evaluate import DiceCounts, baselines, normalise, predict_labels
from models.nets import MobileUNet
from models.registry import sha256_file

__all__ = ["TrainConfig", "default_card", "train"]

logger = logging.getLogger(__name__)

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes the result; saved in metrics.json beside the weights."""

    data: Path
    out: Path
    name: str = "crc-tumour"
    epochs: int = 60
    batch_size: int = 16
    crop_px: int = 192
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: float = 1.0
    seed: int = 0
    holdout_frac: float = 0.15
    hed_sigma: float = 0.05
    device: str = "cpu"
    # One thread by default: on the shared 2-core machine, measured under load, a 2-thread
    # OpenMP step took 3-19 s (threads wait on each other when one is descheduled) vs 1.2-2 s.
    threads: int = 1
    max_minutes: float | None = None  # stop early (and still save + score) past this wall time
    limit: int | None = None  # first N train / val images only (smoke tests)


def _check(config: TrainConfig) -> None:
    for key in ("epochs", "batch_size", "crop_px", "threads"):
        if getattr(config, key) < 1:
            raise TrainingConfigError(f"{key} must be >= 1 (got {getattr(config, key)})")
    if not 32 <= config.crop_px <= 224:
        raise TrainingConfigError(f"crop must be 32..224 px (images are 224), got {config.crop_px}")
    if config.lr <= 0 or config.width <= 0 or not 0 <= config.holdout_frac < 1:
        raise TrainingConfigError("need lr > 0, width > 0 and 0 <= holdout fraction < 1")


def _seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _holdout_split(data: Dataset, frac: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out whole cases, about ``frac`` of each class folder's cases (at least one)."""
    rng = random.Random(seed)
    held: set[str] = set()
    for folder in sorted(set(data.folders)):
        cases = sorted({c for c, f in zip(data.cases, data.folders, strict=True) if f == folder})
        if len(cases) > 1 and frac > 0:
            held.update(rng.sample(cases, max(1, round(len(cases) * frac))))
    fit = [i for i, c in enumerate(data.cases) if c not in held]
    hold = [i for i, c in enumerate(data.cases) if c in held]
    return fit, hold


def _loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy plus soft Dice over the two foreground classes (pixels are unbalanced)."""
    ce = F.cross_entropy(logits, target)
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs)
    inter = (probs * onehot).sum(dim=(0, 2, 3))[1:]
    total = (probs + onehot).sum(dim=(0, 2, 3))[1:]
    soft_dice = 1.0 - ((2 * inter + 1.0) / (total + 1.0)).mean()
    return ce + soft_dice


def _score(model: nn.Module, data: Dataset, device: str) -> dict[str, float]:
    counts = DiceCounts()
    counts.update(predict_labels(model, data.images, MEAN, STD, device=device), data.labels)
    return counts.scores()


def default_card(config: TrainConfig, out: Path, sha256: str, quality: Quality) -> ModelCard:
    """The card of a model trained with ``config`` (used to write ``card.toml``)."""
    return ModelCard(
        name=config.name,
        version="1.0.0",
        architecture="mobile_unet",
        architecture_args={"width": config.width},
        classes=(
            ClassInfo(0, "background", "#000000"),
            ClassInfo(1, "epithelium", "#2ca02c"),
            ClassInfo(2, "tumour", "#d62728"),
        ),
        mpp=1.0,
        patch_size_px=256,
        overlap_px=32,
        mean=MEAN,
        std=STD,
        weights_file="weights.pt",
        weights_sha256=sha256,
        weights_dtype="float16",
        training_data=(
            "EBHI-Seg subset (465 colorectal biopsy H&E patches, 224 px, ~1 um/px estimated; "
            "train split 357 images / 45 cases), Shi et al., Front. Med. 2023, "
            "doi:10.6084/m9.figshare.21540159"
        ),
        training_licence="CC BY 4.0 (data); weights trained here from random initialisation",
        training_command=(
            f"python -m models train --epochs {config.epochs} --seed {config.seed} "
            f"--device {config.device}"
        ),
        quality=quality,
        intended_use=(
            "Research: outline colorectal glandular epithelium and flag neoplastic "
            "(intraepithelial neoplasia, serrated adenoma, adenocarcinoma) epithelium for a "
            "pathologist to review. Output is pending validation, never a diagnosis."
        ),
        limits=(
            "Trained on 357 microscope-camera patches from 45 cases of one centre; not validated "
            "on whole-slide scanner images.",
            "Input scale ~1 um/px is an estimate from crypt size, not a calibration.",
            "Tumour vs non-neoplastic is decided from ~200 um of context; low-grade neoplasia and "
            "polyps look alike at this scale.",
            "Masks are coarse region outlines: boundaries are approximate.",
        ),
        directory=out,
    )


def _toml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def render_card(card: ModelCard) -> str:
    """``card.toml`` text for ``card`` (round-trips through ``parse_card``)."""
    q = card.quality
    lines = [
        f"name = {_toml_str(card.name)}",
        f"version = {_toml_str(card.version)}",
        f"architecture = {_toml_str(card.architecture)}",
        f"intended_use = {_toml_str(card.intended_use)}",
        "limits = [",
        *[f"  {_toml_str(item)}," for item in card.limits],
        "]",
        "",
        "[architecture_args]",
        *[f"{key} = {value}" for key, value in card.architecture_args.items()],
        "",
        "[input]",
        f"mpp = {card.mpp}",
        f"patch_size_px = {card.patch_size_px}",
        f"overlap_px = {card.overlap_px}",
        f"mean = {list(card.mean)}",
        f"std = {list(card.std)}",
        "",
        "[weights]",
        f"file = {_toml_str(card.weights_file)}",
        f"sha256 = {_toml_str(card.weights_sha256)}",
        f"dtype = {_toml_str(card.weights_dtype)}",
        "",
        "[training]",
        f"data = {_toml_str(card.training_data)}",
        f"licence = {_toml_str(card.training_licence)}",
        f"command = {_toml_str(card.training_command)}",
        "",
        "[quality]",
        f"split = {_toml_str(q.split)}",
        f"dice_epithelium = {q.dice_epithelium:.4f}",
        f"dice_tumour = {q.dice_tumour:.4f}",
        f"notes = {_toml_str(q.notes)}",
        "",
        "[quality.baselines]",
        *[f"{key} = {value:.4f}" for key, value in q.baselines.items()],
    ]
    for info in card.classes:
        lines += ["", "[[classes]]", f"index = {info.index}", f"name = {_toml_str(info.name)}"]
        lines += [f"color = {_toml_str(info.color)}"]
    return "\n".join(lines) + "\n"


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, evaluate on ``val``, write weights + metrics + card under ``config.out``."""
    _check(config)
    torch.set_num_threads(config.threads)
    gen = _seed_everything(config.seed)
    device = config.device
    config.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    full = load_ebhi(config.data, "train", config.limit)
    fit_idx, hold_idx = _holdout_split(full, config.holdout_frac, config.seed)
    fit, hold = full.subset(fit_idx), full.subset(hold_idx)
    logger.info(
        "train: %d images to fit, %d held out (%d cases)", len(fit), len(hold), len(set(hold.cases))
    )
    images = torch.from_numpy(fit.images).permute(0, 3, 1, 2).contiguous()  # uint8 N,3,H,W
    labels = torch.from_numpy(fit.labels).long()

    model = MobileUNet(num_classes=3, width=config.width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(fit) // config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=total_steps, pct_start=0.1
    )
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(fit), generator=gen)
        losses = []
        t0 = time.monotonic()
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = images[idx].float() / 255.0
            x, y = geometric(x, labels[idx], config.crop_px, gen)
            x = color_jitter(hed_jitter(x, gen, config.hed_sigma), gen)
            x, y = normalise(x, MEAN, STD).to(device), y.to(device)
            loss = _loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            losses.append(loss.item())
        row: dict[str, Any] = {
            "epoch": epoch,
            "loss": float(np.mean(losses)),
            "seconds": round(time.monotonic() - t0, 1),
        }
        if len(hold) and (epoch % 10 == 0 or epoch == config.epochs):
            row.update(
                {f"holdout_{k}": round(v, 4) for k, v in _score(model, hold, device).items()}
            )
        history.append(row)
        logger.info("epoch %s", json.dumps(row))
        if config.max_minutes and time.monotonic() - started > config.max_minutes * 60:
            logger.warning("stopping after epoch %d: past %s minutes", epoch, config.max_minutes)
            break

    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    weights = config.out / "weights.pt"
    torch.save(state, weights)
    # Score the saved float16 weights exactly as load_model will run them.
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    val = load_ebhi(config.data, "val", config.limit)
    scores = _score(model, val, device)
    base = baselines(val.labels)
    minutes = (time.monotonic() - started) / 60
    logger.info("val %s baselines %s (%.1f min)", scores, base, minutes)
    quality = Quality(
        split="val",
        dice_epithelium=scores["dice_epithelium"],
        dice_tumour=scores["dice_tumour"],
        baselines=base,
        notes=(
            f"{len(val)} val images from {len(set(val.cases))} unseen cases, pixel Dice pooled "
            f"over the split; trained {len(history)}/{config.epochs} epochs "
            f"in {minutes:.0f} min on {device}"
        ),
    )
    card = default_card(config, config.out, sha256_file(weights), quality)
    text = render_card(card)
    parse_card(tomllib.loads(text), config.out)  # what we write must parse
    (config.out / "card.toml").write_text(text, encoding="utf-8")
    metrics = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "history": history,
        "val": scores,
        "baselines": base,
        "minutes": round(minutes, 2),
        "weights_bytes": weights.stat().st_size,
    }
    (config.out / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return metrics


def with_overrides(config: TrainConfig, **changes: Any) -> TrainConfig:
    """``config`` with the non-None ``changes`` applied."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
