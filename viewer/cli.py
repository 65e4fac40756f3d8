"""The ``iain`` console script: the composition root that dispatches to each package's CLI.

``iain convert ...`` is ``python -m tiling convert ...``; each package's ``__main__.main(argv)``
takes the subcommand name first and returns an exit status.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

# subcommand -> (package whose __main__ handles it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("wsi", "print a slide's levels, mpp, vendor, associated images (--json)"),
    "convert": ("tiling", "convert a slide into a pyramidal OME-Zarr (local path or s3://)"),
    "serve": ("viewer", "serve converted slides: tiles, IIIF, DeepZoom, Zarr, the viewer"),
    "nginx-conf": ("viewer", "print an nginx front that sends granted tiles itself"),
    "demo": ("viewer", "convert the sample slides and serve them"),
    "models": ("models", "list / show the registered segmentation models"),
    "train": ("models", "train the tumour segmentation model on the EBHI-Seg subset"),
    "infer": ("inference", "run a model over whole slides, writing a label pyramid"),
    "predict": ("inference", "run a model over plain images"),
    "user": ("share", "manage user accounts"),
    "audit": ("share", "verify or export the audit trail"),
    "db": ("share", "apply the accounts/audit/annotations database migrations"),
    "opinions": ("share", "second-opinion requests: remind consultants of overdue ones"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: iain COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command = args[0]
    if command not in COMMANDS:
        print(f"iain: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    package, _ = COMMANDS[command]
    module = importlib.import_module(f"{package}.__main__")
    status: int = module.main(args)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
