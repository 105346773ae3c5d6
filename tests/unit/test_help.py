"""dst-train --help and --version: every schema key, group, option and default argument named, from the code."""
import importlib.metadata
import resource
import subprocess
import sys

import pytest

from dst_cli.compose import config_groups, hydra_instance
from dst_cli.help import argument_help, help_text, maybe_print_help
from dst_cli.lr_schedules import Step
from dst_cli.schema import describe_keys

HEAVY_MODULES = ("torch", "torchvision", "sklearn", "matplotlib")


@pytest.fixture(scope="module")
def text() -> str:
    return help_text()


def named_keys(text: str) -> set[str]:
    """The keys at the start of the help's option lines ("  key=default  meaning" or "  key")."""
    return {line.split()[0].split("=")[0] for line in text.splitlines() if line.startswith("  ") and line[2] != " "}


def test_every_schema_key_and_every_argument_of_the_default_options_is_named(text, make_cfg):
    keys = {key for key, *_ in describe_keys()}
    cfg = make_cfg()
    for group in ("model", "dataset", "acq", "schedule", "init", "optim", "lr_schedule"):
        keys |= {f"{group}.{name}" for name in cfg[group] if name != "_target_"}
    assert len(keys) > 45
    assert keys - named_keys(text) == set()


def test_every_key_shows_its_default_allowed_values_and_meaning(text):
    lines = text.splitlines()
    assert "  sparsity=0.98" in "\n".join(lines)
    line = next(i for i, line in enumerate(lines) if line.startswith("  trainer.progress=auto "))
    assert "[auto | bar | log | none]" in " ".join(lines[line:line + 3])
    joined = " ".join(" ".join(lines).split())
    assert "schedule.update_interval=1000 optimizer steps between mask updates [an integer]" in joined
    assert "acq.c=0.0003 weight of the exploration term" in joined and "acq.bonus=log" in joined
    assert "lr_schedule.warmup_epochs=0.0 linear lr warm-up from 0 over this many epochs" in joined


def test_argument_help_is_the_first_sentence_of_its_docstring_line():
    assert argument_help(Step, "gamma") == "the factor at each milestone"
    assert argument_help(Step, "warmup_epochs").startswith("linear lr warm-up from 0")  # from the base class
    assert argument_help(Step, "nope") == ""


def test_every_group_and_option_is_listed_with_the_default_marked(text):
    with hydra_instance() as hydra:
        groups = config_groups(hydra)
        options = {group: hydra.config_loader.get_group_options(group) for group in groups}
    assert {"model", "dataset", "acq", "schedule", "init", "optim", "lr_schedule", "logger", "method",
            "experiment"} <= set(groups)
    lines = text.splitlines()
    for group in groups:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"  {group} "))  # not a wrapped meaning
        block = " ".join(lines[start:start + 8]).replace("*", "").replace("- ", "-").split()
        assert set(options[group]) <= set(block), group
    for default in ("vgg19*", "ee*", "itop*", "sgd*", "step*", "random*", "basic*"):
        assert default in text


def test_recipes_and_layout(text):
    for recipe in ("-m ", "hydra.run.dir=", "dst-report", "torchrun", "hydra/launcher=joblib",
                   "hydra/launcher=slurm", "model._target_=", "optim._target_=", "hydra.searchpath="):
        assert recipe in text, recipe
    assert max(len(line) for line in text.splitlines()) <= 80
    assert not any(line.endswith(" ") for line in text.splitlines())


def test_help_and_version_flags(capsys):
    assert maybe_print_help(["experiment=quickstart", "-h"])
    assert capsys.readouterr().out.startswith("usage: dst-train")
    assert maybe_print_help(["--version"])
    assert capsys.readouterr().out == f"dst-train {importlib.metadata.version('dst-cli')}\n"
    assert not maybe_print_help(["experiment=quickstart", "hydra.run.dir=x"])
    assert capsys.readouterr().out == ""


def answer(flag: str) -> tuple[subprocess.CompletedProcess, float, list[str]]:
    """dst-train FLAG in a fresh process: its result, CPU seconds (not wall time: other jobs on a shared
    machine do not make the test flaky) and the heavy modules it loaded."""
    probe = (f"import sys; sys.argv = ['dst-train', '{flag}']\n"
             "from dst_cli.cli import main\n"
             "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
             f"print('HEAVY', sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr
    heavy = done.stdout.splitlines()[-1].removeprefix("HEAVY ")
    return done, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, heavy


def test_version_answers_without_torch_and_help_in_seconds():
    done, cpu_s, heavy = answer("--version")
    assert heavy == "[]" and cpu_s < 2.0
    done, cpu_s, heavy = answer("--help")  # the options' defaults come from the library's signatures: torch
    assert "Options (KEY=VALUE" in done.stdout and cpu_s < 6.0
    assert "powered by Hydra" not in done.stdout and "Hydra 1." not in done.stdout  # Hydra's own answer is not added
