"""`dst-train --help` and `--version`, without importing torch (the help is printed in well under 2 s).

Every key's default, allowed values and meaning come from the schema (dst_cli.config.describe_keys); the
defaults that the group files set, and the groups' choices, from composing conf/train.yaml as dst-train
does. Plug-in nodes (model, dataset, acq) have no schema: their keys are read from the default choice's
file, with its inline comments as their meaning.
"""
import importlib.metadata
import importlib.resources
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

# Groups whose choice is not described by one schema key (model, dataset, acq and optim are).
GROUP_MEANINGS = {
    "experiment": "a preset setting many keys at once (its file's header gives its source)",
    "schedule": "when and how much the topology changes: a preset of the schedule.* keys",
    "logger": "where metrics go besides metrics.jsonl",
    "method": "a method of the paper table (acq, init and schedule at once): +method=NAME",
    "sparsity_level": "a sparsity column of the paper table: +sparsity_level=NAME",
}

RECIPES = [
    ("dst-train experiment=quickstart",
     "small CNN on the offline digits, 30 epochs (~15 s on 2 CPU cores)"),
    ("dst-train model=vgg19 dataset=synthetic trainer.epochs=1",
     "one epoch of VGG-19 on generated CIFAR-shaped data (minutes on a CPU)"),
    ("dst-train -m experiment=quickstart acq=ee,rigl,set sparsity=0.9,0.95 seed=0,1,2",
     "a sweep: one run per combination in outputs/multiruns/<date>_<time>/<job>/, then report.md, "
     "summary.csv and plots in the sweep dir"),
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
     "experiment=vgg19_cifar10 acq=ee,rigl seed=0,1,2",
     "a SLURM sweep via submitit; jobs requeue and resume on their time limit"),
    ("dst-train model._target_=my_pkg.models.Net +model.hidden=64",
     "your own model: any nn.Module class or factory (num_classes, input_shape passed if accepted)"),
    ("dst-train dataset._target_=my_pkg.data.make +dataset.size=1000",
     "your own data: a callable returning (train, test) or (train, val, test) datasets"),
    ("dst-train acq._target_=my_pkg.acq.MyAcq +acq.alpha=0.5",
     "your own acquisition function: a subclass of dst_cli.sparse.Acquisition"),
    ("dst-train [OVERRIDES] --cfg job", "print the composed config and exit (Hydra)"),
    ("dst-train --hydra-help", "Hydra's own flags"),
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


def group_options(group: str) -> list[str] | None:
    """The options of config group `group` (e.g. "model", "hydra/launcher"), or None if there is no such group."""
    folder = importlib.resources.files("dst_cli.conf").joinpath(group)
    if not folder.is_dir():
        return None
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def config_groups() -> list[str]:
    """The groups a user picks from (hydra's own, under hydra/, excepted)."""
    folder = importlib.resources.files("dst_cli.conf")
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and group_options(entry.name)
                  and entry.name != "hydra")


def default_config():
    """conf/train.yaml composed with no overrides, with Hydra's node (for the chosen group options)."""
    import dst_cli.config  # noqa: F401  (registers the schema the conf files extend)
    from hydra import compose, initialize_config_module

    with initialize_config_module("dst_cli.conf", version_base="1.3"):
        return compose("train", return_hydra_config=True)


def entry(name: str, *paragraphs: str) -> list[str]:
    """`name` in the key column, each paragraph wrapped beside it (the first below it if the name is too long)."""
    indent = " " * (KEY_COLUMN + 2)
    lines = [line.replace(UNBROKEN_SPACE, " ") for paragraph in paragraphs if paragraph
             for line in textwrap.wrap(paragraph, WIDTH, initial_indent=indent, subsequent_indent=indent)]
    if lines and len(name) <= KEY_COLUMN - 2:
        return [f"  {name.ljust(KEY_COLUMN)}{lines[0][KEY_COLUMN + 2:]}", *lines[1:]]
    return [f"  {name}", *lines]


def schema_rows(cfg) -> list[tuple[str, str]]:
    """(key=default, meaning [allowed]) of every schema key; optim's keys are those of every optimizer,
    a key that only some have says which."""
    from omegaconf import OmegaConf

    from dst_cli.config import OPTIM_SCHEMAS, PLUGIN_GROUPS, TrainConfig, describe_keys, shown

    described = [row for row in describe_keys(TrainConfig) if row[0] not in (*PLUGIN_GROUPS, "optim")]
    owners: dict[str, list[str]] = {}
    for name, schema in OPTIM_SCHEMAS.items():
        for row in describe_keys(schema, "optim."):
            if row[0] not in owners:
                described.append(row)
            owners.setdefault(row[0], []).append(name)
    rows = []
    for key, allowed, meaning, _ in described:
        only = owners.get(key, OPTIM_SCHEMAS)
        if len(only) < len(OPTIM_SCHEMAS):
            meaning += f" (optim={', '.join(only)} only)"
        value = OmegaConf.select(cfg, key, default=ABSENT)
        allowed = allowed.replace(" ", UNBROKEN_SPACE)
        rows.append((key if value is ABSENT else f"{key}={shown(value)}", f"{meaning} [{allowed}]"))
    return rows


def plugin_rows(cfg, group: str) -> list[tuple[str, str]]:
    """(key=default, inline comment) of the keys of `group`'s default choice (its own arguments)."""
    from dst_cli.config import shown

    choice = cfg.hydra.runtime.choices[group]
    text = importlib.resources.files("dst_cli.conf").joinpath(group, f"{choice}.yaml").read_text()
    comments = dict(re.findall(r"^(\w+):[^#\n]*#\s*(.*)$", text, flags=re.MULTILINE))
    return [(f"{group}.{key}={shown(cfg[group][key])}", comments.get(key, ""))
            for key in cfg[group] if key != "name"]


def group_rows(cfg) -> list[tuple[str, str, str]]:
    """(group, meaning, choices with the default marked *) of every config group."""
    from dst_cli.config import TrainConfig, describe_keys, schema_fields

    nodes = {name: spec.metadata["help"] for name, spec in schema_fields(TrainConfig).items()}  # init, schedule, ...
    meanings = nodes | {key: meaning for key, _, meaning, _ in describe_keys(TrainConfig)} | GROUP_MEANINGS
    rows = []
    for group in config_groups():
        default = cfg.hydra.runtime.choices.get(group)
        choices = " ".join(f"{choice}*" if choice == default else choice for choice in group_options(group))
        rows.append((group, meanings.get(group, f"presets in conf/{group}/"), choices))
    launchers = " ".join(["basic*", "joblib", *group_options("hydra/launcher")])
    rows.append(("hydra/launcher", "how a sweep (-m) runs its jobs", launchers))
    return rows


def recipe_lines() -> list[str]:
    lines = []
    for command, meaning in RECIPES:
        lines += textwrap.wrap(command, WIDTH, initial_indent="  ", subsequent_indent="      ",
                               break_on_hyphens=False)
        lines += textwrap.wrap(meaning, WIDTH, initial_indent="      ", subsequent_indent="      ")
    return lines


def help_text() -> str:
    from dst_cli.config import PLUGIN_GROUPS

    cfg = default_config()
    lines = ["usage: dst-train [-m] [GROUP=CHOICE ...] [KEY=VALUE ...]", "       dst-train --help | --version", ""]
    lines += [*textwrap.wrap(" ".join(ABOUT.split()), WIDTH), ""]
    lines += ["Groups (GROUP=CHOICE; * = default):"]
    for group, meaning, choices in group_rows(cfg):
        lines += entry(group, meaning, choices)
    lines += ["", "Options (KEY=VALUE; shown with their defaults; [allowed values]):"]
    for name, meaning in schema_rows(cfg):
        lines += entry(name, meaning)
    lines += ["", "Arguments of the default model, dataset and acq (another choice has its own;",
              "+GROUP.KEY=VALUE adds one; see `dst-train GROUP=CHOICE --cfg job`):"]
    for group in PLUGIN_GROUPS:
        for name, meaning in plugin_rows(cfg, group):
            lines += entry(name, meaning)
    lines += ["", "Recipes:", *recipe_lines()]
    lines += ["", "After -m, a,b or range(0,5) sweeps a key; README.md has the details."]
    return "\n".join(lines)
