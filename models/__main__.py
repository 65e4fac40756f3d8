"""``python -m models`` / ``iain models|train``: list and show cards, train the model."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from models.errors import ModelError

__all__ = ["main"]

_DEFAULT_DATA = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "ebhi-seg-subset"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iain", description="models: registry and training")
    sub = parser.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="list / show registered models")
    msub = models.add_subparsers(dest="action", required=True)
    lst = msub.add_parser("list", help="every registered model")
    lst.add_argument("--json", action="store_true", help="each card as JSON")
    show = msub.add_parser("show", help="one model's card")
    show.add_argument("name")
    train = sub.add_parser("train", help="train the segmentation model on EBHI-Seg")
    train.add_argument("--data", type=Path, default=_DEFAULT_DATA, help="EBHI-Seg subset folder")
    train.add_argument("--out", type=Path, default=Path("models/runs/latest"))
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--width", type=float, default=None)
    train.add_argument("--crop", type=int, default=None, help="training crop size (px)")
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    train.add_argument("--max-minutes", type=float, default=None, help="wall-time budget")
    train.add_argument("--limit", type=int, default=None, help="use the first N images only")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "models":
        from models.registry import get_card, list_models

        if args.action == "list":
            cards = list_models()
            if args.json:
                print(json.dumps([card.to_json() for card in cards], indent=2))
            else:
                for card in cards:
                    q = card.quality
                    print(
                        f"{card.name}  {card.version}  {card.architecture}  {card.mpp} um/px  "
                        f"dice epithelium {q.dice_epithelium:.3f} tumour {q.dice_tumour:.3f} "
                        f"({q.split})"
                    )
            return 0
        print(json.dumps(get_card(args.name).to_json(), indent=2))
        return 0

    from models.train import TrainConfig, train, with_overrides

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("iain train: --device cuda but no CUDA device is available", file=sys.stderr)
            return 2
    config = with_overrides(
        TrainConfig(data=args.data, out=args.out, device=args.device),
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        width=args.width,
        crop_px=args.crop,
        threads=args.threads,
        limit=args.limit,
        max_minutes=args.max_minutes,
    )
    metrics = train(config)
    print(
        json.dumps({"val": metrics["val"], "baselines": metrics["baselines"], "out": str(args.out)})
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``argv`` starts with the subcommand (``models`` or ``train``)."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return _run(args)
    except ModelError as exc:
        print(f"iain {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
