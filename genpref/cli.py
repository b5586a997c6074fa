"""The `genpref` command line. Subcommands import torch and the model code only when they run, so
`genpref --help` and `genpref validate` answer at once."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

EXIT_CONFIG, EXIT_USER = 2, 1
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("genpref")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _cmd_train(args) -> None:
    from genpref.config import load_config

    cfg = load_config(args.config, args.overrides)
    from genpref.train import train

    train(cfg)


def _cmd_reward_train(args) -> None:
    from genpref.config import load_config

    cfg = load_config(args.config, args.overrides)
    from genpref.learned_reward import train

    train(cfg)


def _cmd_label(args) -> None:
    from genpref.config import load_config

    cfg = load_config(args.config, args.overrides)
    from genpref.label_command import run

    run(cfg, args.input, args.out, args.from_clusters)


def _cmd_validate(args) -> None:
    from genpref import build
    from genpref.config import load_config

    cfg = load_config(args.config, args.overrides)
    build.check(cfg)
    print(
        f"{args.config}: ok — model.kind={cfg.model.kind}, objective={cfg.objective.name}, "
        f"source={build.source_name(cfg)}, {cfg.train.max_steps} steps × batch {cfg.train.batch_size} × accum {cfg.train.grad_accum}"
    )


def _run_kind(run_dir: str, config_ok: bool = False) -> str:
    """The model.kind of a run directory's config.yaml (or, where `config_ok`, of a config file)."""
    from pathlib import Path

    from genpref.build import model_kinds
    from genpref.config import ConfigError, read_yaml
    from genpref.errors import UserError

    path = Path(run_dir)
    if path.is_dir():
        cfg_path = path / "config.yaml"
        if not cfg_path.is_file():
            raise UserError(f"{path} is not a run directory: it has no config.yaml (a run's train.output_dir has one)")
    elif config_ok and path.is_file():
        cfg_path = path
    else:
        wanted = "a run directory or a config file" if config_ok else "a run directory (a train.output_dir)"
        raise UserError(f"{path}: not found; expected {wanted}" if not path.exists() else f"{path} is a file, not {wanted}")
    kind = read_yaml(cfg_path).get("model", {}).get("kind")
    if kind not in model_kinds():
        raise ConfigError(f"{cfg_path}: model.kind {kind!r} is not a known model kind")
    return kind


def _commands_for_run(run_dir: str, config_ok: bool = False):
    """The modality's command module (image.commands / motion.commands) of a run's (or config's) model.kind."""
    import importlib

    from genpref.build import model_kinds
    from genpref.errors import UserError

    kind = _run_kind(run_dir, config_ok)
    package = model_kinds()[kind].split(".")[0]
    try:
        return importlib.import_module(f"{package}.commands")
    except ModuleNotFoundError:
        raise UserError(f"model.kind {kind!r} has no sample/eval/export commands") from None


def _cmd_sample(args) -> None:
    commands = _commands_for_run(args.run_dir)
    options = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance), ("solver", args.solver)) if v is not None}
    out = commands.sample(args.run_dir, args.prompt, args.seed, args.out, **options)
    print(f"wrote {out}")


def _cmd_eval(args) -> None:
    _commands_for_run(args.target, config_ok=True).evaluate(args.target, args)


def _cmd_demo(args) -> None:
    from genpref.demo import run_demo

    run_demo(args.part, args.out, args.seed)


def _cmd_bench(args) -> None:
    from genpref.demo import bench_quality

    arms = [a for a in args.arms.split(",") if a] if args.arms else None
    bench_quality(args.task, args.out, args.seeds, args.steps, args.runs, arms, args.setting)


def _cmd_export(args) -> None:
    from genpref import exporters

    out = exporters.for_kind(_run_kind(args.run_dir), args.format).write(args.run_dir, args.out)
    from genpref.modelcard import write_model_card

    target = Path(args.out)  # an output directory gets README.md; a single weights file gets <name>.md beside it
    card = write_model_card(args.run_dir, target) if target.is_dir() else write_model_card(args.run_dir, target.parent, target.stem + ".md")
    print(f"wrote {out} and the model card {card}")


def _cmd_report(args) -> None:
    from genpref.report import write_runs_report

    print(f"wrote {write_runs_report(args.runs, args.out)}")


def _cmd_push(args) -> None:
    from genpref.push import push_run

    print(f"pushed {args.run_dir}/final to {push_run(args.run_dir, args.repo, private=args.private, revision=args.revision)}")


def make_parser() -> argparse.ArgumentParser:
    from genpref.build import OBJECTIVES, model_kinds

    parser = argparse.ArgumentParser(
        prog="genpref",
        description="Preference fine-tuning for diffusion models of images and motion.",
        epilog=f"model kinds: {', '.join(model_kinds())}\nobjectives: "
        + "; ".join(f"{k} ({v})" for k, v in OBJECTIVES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"genpref {_version()}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    overrides_help = "section.key=value overrides, e.g. train.lr=1e-4 model.lora.rank=8"
    run_help = "a run directory (the train.output_dir of a finished `genpref train`)"

    p = sub.add_parser("train", help="fine-tune a model from a YAML recipe")
    p.add_argument("config", help="recipe YAML, e.g. configs/image/tiny_dro.yaml")
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("validate", help="check a recipe (keys, types, names, data paths) without running it")
    p.add_argument("config", help="recipe YAML to check")
    p.add_argument("overrides", nargs="*", help=overrides_help)
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("reward", help="reward models learned from your own preference data")
    actions = p.add_subparsers(dest="reward_command", metavar="ACTION", required=True, help="train: fit one")
    q = actions.add_parser("train", help="fit a Bradley–Terry reward head on data.pairs / data.ratings (frozen CLIP or "
                           "T2M-evaluator embeddings) into the path of reward.models' `learned` entry")
    q.add_argument("config", help="recipe YAML with reward.models=[{name: learned, path: DIR}] and reward_train.encoder")
    q.add_argument("overrides", nargs="*", help=overrides_help)
    q.set_defaults(func=_cmd_reward_train)

    p = sub.add_parser("label", help="label an unlabelled image folder or HumanML3D-format directory with reward.models: "
                       "pairs.jsonl and ratings.jsonl for data.pairs / data.ratings")
    p.add_argument("config", help="recipe YAML with model.kind (image or motion), reward.models and label.* settings")
    p.add_argument("overrides", nargs="*", help=overrides_help + "; label.* keys set the pairs and ratings")
    p.add_argument("--input", required=True, help="images: a folder with metadata.jsonl ({file_name, text} per image); "
                   "motion: a HumanML3D-format directory (new_joint_vecs/*.npy, texts/*.txt)")
    p.add_argument("--out", required=True, help="output directory: pairs.jsonl, ratings.jsonl, label.json")
    p.add_argument("--from-clusters", metavar="RATED.jsonl", help="instead of scoring: give each input sample the mean "
                   "rating of the rated samples in its k-means cluster of embeddings (label.clusters, label.embedding)")
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser("sample", help="generate from a finished run (an image grid; motion .npy + GIF)")
    p.add_argument("run_dir", help=run_help)
    p.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    p.add_argument("--seed", action="append", type=int, help="repeat for several seeds (default 0)")
    p.add_argument("--out", required=True, help="output file (image) or directory (motion)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the run's eval.steps, else the modality's)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the run's eval.guidance, else the modality's)")
    p.add_argument("--solver", help="diffusers scheduler name, e.g. dpmsolver++, ddim, euler (default: the run's eval.solver)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("eval", help="evaluate a run (or a config's base model): T2M metrics for motion, scorers and win rates for images")
    p.add_argument("target", help="a run directory or a config file (its base model)")
    p.add_argument("overrides", nargs="*", help=overrides_help + "; eval.* keys set the protocol")
    p.add_argument("--out", help="output directory (default <run>/eval)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the run's eval.steps, else the published protocol)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance (default: the run's eval.guidance, else the published protocol)")
    p.add_argument("--solver", help="diffusers scheduler name (default: the run's eval.solver, else the published protocol)")
    p.add_argument("--batch-size", type=int, help="generation batch (motion R-precision stays on groups of 32)")
    g = p.add_argument_group("motion (T2M protocol)")
    g.add_argument("--evaluator", help="T2M evaluator: finest.tar or its run directory (or eval.evaluator)")
    g.add_argument("--glove", help="directory of our_vab_data.npy / our_vab_words.pkl / our_vab_idx.pkl (or eval.glove)")
    g.add_argument("--root", help="HumanML3D-format directory whose test split is evaluated (or eval.root; default: the run's data.root)")
    g.add_argument("--replications", type=int, help="replications (default 20)")
    g.add_argument("--mm", action="store_true", help="also MultiModality (100 texts × 30 generations)")
    g = p.add_argument_group("images")
    g.add_argument("--prompts", help="prompt file, or 'shapes' for the shapes task's held-out prompts")
    g.add_argument("--against", help="another run directory, or 'base': paired win rates")
    g.add_argument("--images-per-prompt", type=int, help="images per prompt (default 5)")
    g.add_argument("--scorer", action="append", metavar="NAME[=PATH]",
                   help="scorer name, with its local weights as NAME=PATH, e.g. pickscore=/models/PickScore_v1 (repeat); "
                        "default the config's reward.models")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("report", help="one self-contained HTML page for one or more runs side by side: curves, samples, eval tables")
    p.add_argument("runs", nargs="+", help="run directories to compare")
    p.add_argument("--out", default="genpref-report.html", help="HTML file to write (default ./genpref-report.html)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", help="see preference fine-tuning work on CPU: synthetic tasks, base vs fine-tuned, a report")
    p.add_argument("part", nargs="?", default="all", choices=["all", "image", "motion"], help="which half to run (default both)")
    p.add_argument("--out", default="genpref-demo", help="report directory (default ./genpref-demo)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and evaluation noise (default 0)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="benchmarks run by hand: `genpref bench quality` compares every objective")
    p.add_argument("which", choices=["quality"], help="which benchmark: quality (every objective, same budget, several seeds)")
    p.add_argument("--task", default="all", choices=["all", "image", "motion"], help="synthetic task(s) to run (default both)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds per arm (default 0 1 2)")
    p.add_argument("--steps", type=int, help="fine-tuning steps per arm (default: the task's budget)")
    p.add_argument("--out", default="benchmarks/results", help="where the JSON and Markdown tables go (default benchmarks/results)")
    p.add_argument("--runs", help="where each task's runs go, as RUNS/image and RUNS/motion (default OUT/quality-TASK-runs); "
                   "finished (arm, seed) rows there are reused, so an interrupted benchmark continues")
    p.add_argument("--arms", help="a comma-separated subset of arms, e.g. grpo,nft,sft (default: every arm)")
    p.add_argument("--setting", default="train_prompts", choices=["train_prompts", "heldout_prompts"],
                   help="train_prompts: online recipes draw training-combination prompts only; heldout_prompts: "
                   "also prompts (never expert data) of the held-out combinations")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("export", help="export a run's final weights and its model card (images: diffusers or kohya LoRA; motion: released layout)")
    p.add_argument("run_dir", help=run_help)
    p.add_argument("--format", default=None, help="images: diffusers (default) or kohya; motion: released (default)")
    p.add_argument("--out", required=True, help="output directory (or a .safetensors file for a LoRA)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("push", help="upload a run's final/ (weights + model card) to a Hugging Face Hub model repository")
    p.add_argument("run_dir", help=run_help)
    p.add_argument("--repo", required=True, help="Hub repository id, e.g. your-name/sd15-dro-lora (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", help="branch to push to (default: the repository's main branch)")
    p.set_defaults(func=_cmd_push)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    # overrides (section.key=value) may come before or after the options
    args, unknown = parser.parse_known_args(argv)
    extra = [u for u in unknown if "=" in u and not u.startswith("-")]
    if len(extra) != len(unknown) or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(u for u in unknown if u not in extra or not hasattr(args, 'overrides'))}")
    if extra:
        args.overrides = list(args.overrides) + extra
    if getattr(args, "seed", "absent") is None:
        args.seed = [0]
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
        return getattr(err, "exit_code", EXIT_USER)
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        # a write we do not wrap ourselves (metrics, samples, a library's cache) ran out of space
        print(f"genpref: error: {err.filename or 'a file'}: {err.strerror}; free space and rerun "
              "(train.resume=latest continues from the last checkpoint)", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("genpref: interrupted; resume with train.resume=latest", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
