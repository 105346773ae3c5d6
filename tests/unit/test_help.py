"""dst-train --help and --version: fast, torch-free, and naming every schema key and group choice."""
import importlib.metadata
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from dst_cli.config import OPTIM_SCHEMAS, PLUGIN_GROUPS, TrainConfig, describe_keys
from dst_cli.help import config_groups, group_options, help_text, maybe_print_help

HEAVY_MODULES = ("torch", "torchvision", "sklearn", "matplotlib")
DST_TRAIN = str(Path(sys.executable).parent / "dst-train")


@pytest.fixture(scope="module")
def text() -> str:
    return help_text()


def named_keys(text: str) -> set[str]:
    """The keys at the start of the help's option lines ("  key=default  meaning" or "  key")."""
    return {line.split()[0].split("=")[0] for line in text.splitlines() if line.startswith("  ") and line[2] != " "}


def test_every_schema_key_is_named(text):
    keys = {key for key, *_ in describe_keys(TrainConfig) if key not in (*PLUGIN_GROUPS, "optim")}
    keys |= {key for schema in OPTIM_SCHEMAS.values() for key, *_ in describe_keys(schema, "optim.")}
    assert len(keys) > 30
    assert keys - named_keys(text) == set()


def test_every_key_shows_its_default_and_allowed_values(text):
    lines = text.splitlines()
    assert "  sparsity=0.98" in "\n".join(lines)
    line = next(i for i, line in enumerate(lines) if line.startswith("  trainer.progress=auto "))
    assert "[auto | bar | log | none]" in " ".join(lines[line:line + 3])
    assert any(line.startswith("  schedule.update_interval=1000") for line in lines)  # from conf/schedule/itop.yaml
    assert any(line.startswith("  acq.c=0.0003 ") for line in lines)  # the default acq's own argument


def test_every_group_and_choice_is_listed(text):
    groups = config_groups()
    assert {"model", "dataset", "acq", "schedule", "optim", "logger", "experiment"} <= set(groups)
    lines = text.splitlines()
    for group in groups:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"  {group} "))  # not a wrapped meaning
        block = " ".join(lines[start:start + 6]).replace("*", "").split()
        assert set(group_options(group)) <= set(block), group
    assert "vgg19*" in text and "ee*" in text and "itop*" in text  # the defaults are marked


def test_recipes_and_layout(text):
    for recipe in ("-m ", "hydra.run.dir=", "dst-report", "torchrun", "hydra/launcher=joblib",
                   "hydra/launcher=slurm", "model._target_=", "dataset._target_=", "acq._target_="):
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


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_dst_train_answers_without_torch_in_under_2_s(flag):
    """CPU seconds, not wall time: other jobs on a shared machine do not make the test flaky."""
    probe = (f"import sys; sys.argv = ['dst-train', '{flag}']\n"
             "from dst_cli.cli import main\n"
             "try:\n    main()\nexcept SystemExit as stop:\n    assert not stop.code, stop.code\n"
             f"print('HEAVY', sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules))")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "HEAVY []"
    assert ("Options (KEY=VALUE" in done.stdout) == (flag == "--help")
    assert "powered by Hydra" not in done.stdout and "Hydra 1." not in done.stdout  # Hydra's own answer is not added
    assert cpu_s < 2.0
