"""`dst-train --help` and `--version`.

Every key's default, allowed values and meaning come from the schema (dst_cli.schema) and the callables
the groups' options name (their signatures, annotations and docstrings); the groups and their options from
the Hydra config loader (built-ins and any option a user's searchpath adds), the defaults from composing
conf/train.yaml as dst-train does.
"""
import importlib.metadata
import inspect
import re
import textwrap

HELP_FLAGS = ("--help", "-h")
WIDTH = 80
KEY_COLUMN = 30  # "key=default" column; the meaning starts after it
ABSENT = object()  # a key the default composition does not have
UNBROKEN_SPACE = "\x00"  # a space the wrapping must not break at (inside "[allowed values]")

ABOUT = """\
dst-train: dynamic sparse training. The network stays sparse from the first step to the last; every
schedule.update_interval steps each layer drops a share of its active weights and grows as many inactive
ones, chosen by the acquisition function (acq): DST-EE (gradient + exploration bonus), RigL, SET, random,
static. Each run writes train.log, metrics.jsonl, summary.json and checkpoints into its own directory
(outputs/runs/<date>_<time>/). Options are Hydra overrides: KEY=VALUE, GROUP=CHOICE."""

RECIPES = [
    ("dst-train experiment=quickstart",
     "small CNN on the offline digits, 30 epochs (~12 s on 2 CPU cores)"),
    ("dst-train model=vgg19 dataset=synthetic trainer.epochs=1",
     "one epoch of VGG-19 on generated CIFAR-shaped data (minutes on a CPU)"),
    ("dst-train -m experiment=quickstart method=ee,rigl,set sparsity=0.9,0.95 seed=0,1,2",
     "a sweep: one run per combination in outputs/multiruns/<date>_<time>/<job>/, then report.md, "
     "summary.csv and plots in the sweep dir (every job is checked before the first starts)"),
    ("dst-train experiment=quickstart hydra.run.dir=outputs/runs/mine",
     "a named run dir; the same command again resumes from its checkpoints/last.pt"),
    ("dst-report outputs/multiruns/DIR [more dirs] [--out DIR]",
     "tables and plots from run or sweep dirs, after the fact"),
    ("torchrun --nproc_per_node=2 -m dst_cli experiment=resnet50_imagenet dataset.root=/data/imagenet "
     "hydra.run.dir=outputs/runs/rn50",
     "data parallel, one process per device; trainer.batch_size is per process"),
    ("dst-train -m hydra/launcher=joblib hydra.launcher.n_jobs=2 experiment=quickstart seed=0,1,2,3",
     "a sweep on local processes side by side (the launchers extra)"),
    ("dst-train -m hydra/launcher=slurm hydra.launcher.partition=gpu hydra.sweep.dir=outputs/multiruns/grid "
     "experiment=vgg19_cifar10 method=ee,rigl seed=0,1,2",
     "a SLURM sweep via submitit; jobs requeue and resume on their time limit"),
    ("dst-train optim._target_=torch.optim.Adam optim.lr=1e-3 lr_schedule=cosine",
     "any torch optimizer; its arguments come from its signature"),
    ("dst-train model._target_=my_pkg.models.Net model.hidden=64",
     "your own model: any nn.Module class or factory (num_classes, input_shape passed if accepted)"),
    ("dst-train hydra.searchpath=[pkg://my_pkg.conf] acq=grad_momentum",
     "your own group options (here my_pkg/conf/acq/grad_momentum.yaml with its _target_)"),
    ("dst-train [OVERRIDES] --cfg job", "print the composed config and exit"),
]


def maybe_print_help(argv: list[str]) -> bool:
    """Print the help (--help, -h) or the version (--version); True if one was printed."""
    if any(arg in HELP_FLAGS for arg in argv):
        print(help_text())
        return True
    if "--version" in argv:
        print(f"dst-train {version()}")
        return True
    return False


def version() -> str:
    return importlib.metadata.version("dst-cli")


def entry(name: str, *paragraphs: str) -> list[str]:
    """`name` in the key column, each paragraph wrapped beside it (the first below it if the name is too long)."""
    indent = " " * (KEY_COLUMN + 2)
    lines = [line.replace(UNBROKEN_SPACE, " ") for paragraph in paragraphs if paragraph
             for line in textwrap.wrap(paragraph, WIDTH, initial_indent=indent, subsequent_indent=indent,
                                       break_on_hyphens=False)]
    if lines and len(name) <= KEY_COLUMN - 2:
        return [f"  {name.ljust(KEY_COLUMN)}{lines[0][KEY_COLUMN + 2:]}", *lines[1:]]
    return [f"  {name}", *lines]


def allowed_text(allowed: str) -> str:
    return f"[{allowed.replace(' ', UNBROKEN_SPACE)}]"


def schema_rows(cfg) -> list[tuple[str, str]]:
    """(key=default, meaning [allowed]) of every schema key (the sparse options and trainer.*)."""
    from omegaconf import OmegaConf

    from dst_cli.checks import shown
    from dst_cli.schema import describe_keys

    rows = []
    for key, allowed, meaning, _ in describe_keys():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        rows.append((key if value is ABSENT else f"{key}={shown(value)}", f"{meaning} {allowed_text(allowed)}"))
    return rows


def documented(target) -> list[str]:
    """The docstrings of a callable (a partial: of its function; a class: its own and its __init__'s)."""
    target = getattr(target, "func", target)
    if not inspect.isclass(target):
        return [inspect.getdoc(target) or ""]
    return [inspect.getdoc(klass) or "" for klass in target.__mro__ if klass is not object] + [
        inspect.getdoc(target.__init__) or ""]


def argument_help(target, name: str) -> str:
    """What the callable's docstring says of argument `name`: its "name: text" or "name (type): text" line
    and the more indented lines that continue it."""
    pattern = re.compile(rf"^(\s*){re.escape(name)}(?:\s*\([^)]*\))?:\s+(.+)$")
    for document in documented(target):
        lines = document.splitlines()
        for number, line in enumerate(lines):
            found = pattern.match(line)
            if found:
                indent, text = len(found.group(1)), [found.group(2)]
                for more in lines[number + 1:]:
                    if not more.strip() or len(more) - len(more.lstrip()) <= indent:
                        break
                    text.append(more.strip())
                return " ".join(text).split(". ")[0].removesuffix(".")  # the first sentence
    return ""


def first_paragraph(target) -> str:
    return " ".join(documented(target)[0].split("\n\n")[0].split())


def group_rows(hydra, cfg) -> list[tuple[str, str, str]]:
    """(group, meaning, options with the default marked *) of every config group."""
    from dst_cli.compose import config_groups
    from dst_cli.schema import GROUP_HELP

    rows = []
    for group in config_groups(hydra):
        default = cfg.hydra.runtime.choices.get(group)
        options = hydra.config_loader.get_group_options(group)
        choices = " ".join(f"{option}*" if option == default else option for option in options)
        rows.append((group, GROUP_HELP.get(group, f"presets of {group}"), choices))
    default = cfg.hydra.runtime.choices.get("hydra/launcher")
    launchers = " ".join(f"{option}*" if option == default else option
                         for option in hydra.config_loader.get_group_options("hydra/launcher"))
    rows.append(("hydra/launcher", "how a sweep (-m) runs its jobs", launchers))
    return rows


def argument_rows(node, target, node_key: str) -> list[tuple[str, str]]:
    """(key=default, meaning [allowed]) of the arguments of a group's node."""
    from dst_cli.checks import annotation_check, shown
    from dst_cli.plugins import annotations

    hints = annotations(target)
    rows = []
    for key in node:
        if key == "_target_":
            continue
        allowed = annotation_check(hints.get(key, inspect.Parameter.empty)).allowed
        rows.append((f"{node_key}.{key}={shown(node[key])}", f"{argument_help(target, key)} {allowed_text(allowed)}"))
    return rows


def help_text() -> str:
    from hydra.types import RunMode

    from dst_cli.compose import CONFIG_NAME, hydra_instance

    with hydra_instance() as hydra:
        cfg = hydra.compose_config(CONFIG_NAME, [], run_mode=RunMode.RUN, with_log_configuration=False)
        return "\n".join(help_lines(hydra, cfg))


def help_lines(hydra, cfg) -> list[str]:
    from dst_cli.plugins import import_object
    from dst_cli.schema import PLUGIN_GROUPS

    lines = ["usage: dst-train [-m] [GROUP=CHOICE ...] [KEY=VALUE ...]", "       dst-train --help | --version", ""]
    lines += [*textwrap.wrap(" ".join(ABOUT.split()), WIDTH), ""]
    lines += ["Groups (GROUP=CHOICE; * = default; GROUP._target_=pkg.Class for your own):"]
    for group, meaning, choices in group_rows(hydra, cfg):
        lines += entry(group, meaning, choices)
    lines += ["", "Options (KEY=VALUE; shown with their defaults; [allowed values]):"]
    for name, meaning in schema_rows(cfg):
        lines += entry(name, meaning)
    nodes = [(group, cfg[group]) for group in PLUGIN_GROUPS if group != "logger"]
    nodes += [(f"logger.{name}", node) for name, node in cfg.logger.items()]
    for node_key, node in nodes:
        target = import_object(node["_target_"])
        choice = cfg.hydra.runtime.choices.get(node_key.partition(".")[0])
        lines += ["", *textwrap.wrap(f"{node_key}={choice}: {first_paragraph(target)}", WIDTH)]
        for name, meaning in argument_rows(node, target, node_key):
            lines += entry(name, meaning)
    lines += ["", "Recipes:"]
    for command, meaning in RECIPES:
        lines += textwrap.wrap(command, WIDTH, initial_indent="  ", subsequent_indent="      ",
                               break_on_hyphens=False)
        lines += textwrap.wrap(meaning, WIDTH, initial_indent="      ", subsequent_indent="      ")
    lines += ["", "After -m, a,b or range(0,5) sweeps a key; README.md has the details."]
    return lines
