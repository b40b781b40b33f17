"""The `condgen` command: train, generate, render and data preparation.

Errors that a user can cause (`CondgenError`) are reported as one plain
message and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import shlex
import sys
from pathlib import Path

from condgen import __version__
from condgen.errors import CondgenError, RecipeError

log = logging.getLogger("condgen")

# Sub-commands implemented in domain packages: name -> (module, help). Each
# module provides add_arguments(parser) and run(args) -> int.
DOMAIN_COMMANDS = {
    "generate": ("condgen.synth.generate", "write WAV notes from a trained audio checkpoint"),
    "render": ("condgen.vision.render", "render chair images, turntables and morphs from a trained image checkpoint"),
}
DATA_COMMANDS = {
    "soundfont": ("condgen.synth.soundfont", "render an NSynth-format dataset from a General MIDI SoundFont"),
    "chairs-synthetic": ("condgen.vision.synthetic", "render procedural box chairs in the rendered_chairs layout"),
    "index": ("condgen.streaming", "write the record index of a TFRecord file, so that streaming workers seek to their records"),
}


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%H:%M:%S"
# torch re-raises an exception from a DataLoader worker with the worker's
# traceback in its message. This line starts that traceback.
WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def setup_logging(verbose: bool = False, log_file: Path | None = None) -> None:
    """Log to stderr (and to `log_file` when given) with timestamps."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=LOG_FORMAT,
        datefmt=LOG_DATE_FORMAT,
        handlers=handlers,
        force=True,
    )


class _RecordBuffer(logging.Handler):
    """Log handler that keeps records in memory until the log file may be created."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _start_log_file(path: Path, earlier: list[logging.LogRecord]) -> None:
    """Add a log file handler to the root logger and write the `earlier` records to it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
    for record in earlier:
        handler.handle(record)
    logging.getLogger().addHandler(handler)


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a model from a recipe", description="Train the model that RECIPE describes. Overrides take the form section.key=value, e.g. train.steps=200 data.root=data/nsynth.")
    parser.add_argument("recipe", type=Path, help="recipe TOML file, e.g. recipes/nsynth_ddsp.toml")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides; values are read as TOML, else as strings")
    parser.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT", help="continue a run: from RUN_DIR/checkpoints/latest.safetensors, or from CHECKPOINT")
    parser.add_argument("--force", action="store_true", help="start a new run in a run folder that already contains one, deleting its checkpoints and TensorBoard events")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from condgen.distributed import context_from_env
    from condgen.recipe import load_recipe
    from condgen.registry import get_domain
    from condgen.trainer import Trainer

    if args.resume and args.force:
        raise RecipeError("--resume and --force contradict each other: --resume continues the run, --force starts it again")
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        # `--resume train.steps=800`: argparse hands the override to --resume
        # as its optional CHECKPOINT, but the user meant the latest checkpoint.
        args.overrides.append(args.resume)
        args.resume = "latest"
    # The run folder and train.log are created only once the recipe and the
    # data have been read without error, so bad input leaves no run folder.
    # Until then the log records wait in memory.
    buffer = _RecordBuffer()
    logging.getLogger().addHandler(buffer)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        if args.resume:
            recipe = _stored_recipe(recipe, args)
        is_main = context_from_env().is_main
        if not is_main:
            # Under torchrun the other ranks report only problems, and never to train.log.
            logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.WARNING)
        log.info("condgen %s: training %s/%s from %s", __version__, recipe.domain, recipe.head, args.recipe)
        with logging_redirect_tqdm():
            trainer = Trainer(recipe, resume=args.resume, force=args.force, show_progress=not args.no_progress)
    finally:
        logging.getLogger().removeHandler(buffer)
    if is_main:
        _start_log_file(Path(recipe.run_dir) / "train.log", buffer.records)
    with logging_redirect_tqdm():
        result = trainer.fit()
    if result.signal_number:
        words = [str(args.recipe), *args.overrides, "--resume"]
        if trainer.dist.enabled:
            prefix = f"torchrun --nproc_per_node={trainer.dist.world_size} -m condgen.cli train"
        else:
            prefix = "condgen train"
        log.warning(
            "stopped by %s; to continue from step %d run: %s %s",
            result.stop_signal, result.step, prefix, shlex.join(words),
        )
        return 128 + result.signal_number
    command = "generate" if get_domain(recipe.domain).media == "audio" else "render"
    log.info("use it with: condgen %s %s ...", command, result.latest)
    return 0


def _stored_recipe(recipe, args: argparse.Namespace):
    """Return the recipe a resumed run was trained with, plus this command's overrides.

    The recipe file may have changed since the run started, and the first
    command's overrides are not in it, so the checkpoint's copy is the truth.
    """
    from condgen.checkpoint import load_checkpoint
    from condgen.recipe import apply_override, recipe_from_dict
    from condgen.trainer import CHECKPOINT_DIR, LATEST

    path = Path(recipe.run_dir) / CHECKPOINT_DIR / LATEST if args.resume == "latest" else Path(args.resume)
    if not path.exists():
        return recipe  # the trainer reports the missing checkpoint
    raw = load_checkpoint(path, with_train_state=False).meta["recipe"]
    for override in args.overrides:
        apply_override(raw, override)
    log.info("resuming with the recipe stored in %s (the file %s is not read again); overrides: %s", path, args.recipe, " ".join(args.overrides) or "none")
    return recipe_from_dict(raw, source=f"recipe stored in {path}")


def _add_module_command(subparsers, name: str, module_name: str, help_text: str, selected: bool) -> None:
    """Add a sub-command; import its module only when it is the one being run."""
    parser = subparsers.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
    if selected:
        module = importlib.import_module(module_name)
        module.add_arguments(parser)
        parser.set_defaults(handler=module.run)


def _positionals(argv: list[str]) -> list[str]:
    return [arg for arg in argv if not arg.startswith("-")]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser; `argv` picks the one sub-command whose module is imported."""
    words = _positionals(argv or [])
    command = words[0] if words else None
    data_command = words[1] if command == "data" and len(words) > 1 else None

    parser = argparse.ArgumentParser(prog="condgen", description="Conditional generative models from fully known labels.")
    parser.add_argument("--version", action="version", version=f"condgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(subparsers)
    for name, (module_name, help_text) in DOMAIN_COMMANDS.items():
        _add_module_command(subparsers, name, module_name, help_text, selected=name == command)
    data_parser = subparsers.add_parser("data", help="prepare datasets", description="Prepare datasets that need no download.")
    data_subparsers = data_parser.add_subparsers(dest="data_command", required=True, metavar="DATASET")
    for name, (module_name, help_text) in DATA_COMMANDS.items():
        _add_module_command(data_subparsers, name, module_name, help_text, selected=name == data_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    # argparse cannot take positionals after an option (`train RECIPE --force
    # data.root=...`), so recipe overrides that follow options come back as
    # extra arguments. Any other extra argument is an error, as usual.
    if extra and args.command == "train" and all("=" in word and not word.startswith("-") for word in extra):
        args.overrides.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging(args.verbose)
    try:
        return args.handler(args)
    except CondgenError as error:
        log.error("%s", plain_message(error))
        return 2
    except OSError as error:
        # Unwritable or missing output locations, full disks and the like.
        log.error("%s", describe_os_error(error))
        return 2
    except KeyboardInterrupt:
        log.error("interrupted at once: nothing was saved after the last checkpoint")
        return 130


def plain_message(error: CondgenError) -> str:
    """Return the error's message without the DataLoader worker traceback that torch puts into it.

    torch re-raises an error from a worker process as the same class, with the
    message "Caught DataError in DataLoader worker process 0." followed by the
    worker's traceback. The original message is the traceback's last entry.
    """
    text = str(error)
    if WORKER_TRACEBACK not in text:
        return text
    context = text.split("\n", 1)[0].rstrip(".")
    marker = f"{type(error).__name__}: "
    original = text[text.rfind(marker) + len(marker):].strip() if marker in text else text.splitlines()[-1]
    return f"{original} ({context[0].lower() + context[1:]})"


def describe_os_error(error: OSError) -> str:
    """Describe a failed file operation: the path, the reason and what to do."""
    path = error.filename if error.filename is not None else "a file"
    reason = error.strerror or str(error)
    if error.errno == errno.EEXIST and Path(path).is_file():
        return f"file operation failed: cannot create the folder {path}, because a file of that name exists; choose another output path, or move the file"
    if error.errno == errno.ENOTDIR:
        blocker = next((parent for parent in Path(path).parents if parent.exists()), None)
        if blocker is not None and not blocker.is_dir():
            return f"file operation failed on {path}: {blocker} is a file, not a folder; choose another output path"
        return f"file operation failed on {path}: a part of the path is a file, not a folder; choose another output path"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        if not Path(path).exists() and Path(path).parent.is_dir():
            # Creating a file failed. Its name may be a temporary one, so the message names the folder.
            return f"file operation failed: cannot create a file in the folder {Path(path).parent}: {reason}; choose a folder that you can write to, or change its permissions"
        return f"file operation failed on {path}: {reason}; choose a folder that you can write to, or change its permissions"
    if error.errno == errno.ENOSPC:
        return f"file operation failed on {path}: {reason}; free some space or choose another disk"
    return f"file operation failed on {path}: {reason}; check that the path exists and is writable"


if __name__ == "__main__":
    sys.exit(main())
