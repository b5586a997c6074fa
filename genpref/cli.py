"""The `genpref` command line. Subcommands import torch and the model code only when they run, so
`genpref --help` and `genpref validate` answer at once."""

from __future__ import annotations

import argparse
import sys

EXIT_CONFIG, EXIT_USER = 2, 1


def _cmd_train(args) -> None:
    from genpref.config import load_config

    cfg = load_config(args.config, args.overrides)
    from genpref.train import train

    train(cfg)


def _cmd_validate(args) -> None:
    from genpref import build
    from genpref.config import load_config

    cfg = load_config(args.config, args.overrides)
    build.check(cfg)
    print(
        f"{args.config}: ok — model.kind={cfg.model.kind}, objective={cfg.objective.name}, "
        f"source={build.source_name(cfg)}, {cfg.train.max_steps} steps × batch {cfg.train.batch_size} × accum {cfg.train.grad_accum}"
    )


def make_parser() -> argparse.ArgumentParser:
    from genpref.build import MODEL_KINDS, OBJECTIVES

    parser = argparse.ArgumentParser(
        prog="genpref",
        description="Preference fine-tuning for diffusion models of images and motion.",
        epilog=f"model kinds: {', '.join(MODEL_KINDS)}\nobjectives: "
        + "; ".join(f"{k} ({v})" for k, v in OBJECTIVES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    overrides_help = "section.key=value overrides, e.g. train.lr=1e-4 model.lora.rank=8"

    p = sub.add_parser("train", help="fine-tune a model from a YAML recipe")
    p.add_argument("config", help="recipe YAML, e.g. configs/image/tiny_dro.yaml")
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("validate", help="check a recipe (keys, types, names, data paths) without running it")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.set_defaults(func=_cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    from genpref.config import ConfigError
    from genpref.errors import UserError

    try:
        args.func(args)
    except ConfigError as err:
        print(f"genpref: config error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except UserError as err:
        print(f"genpref: error: {err}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("genpref: interrupted; resume with train.resume=latest", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
