"""The study scripts write under outputs/ (or the dir given) and touch docs/ only when asked (--docs)."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_DST_TRAIN = """#!/usr/bin/env bash
# stands in for a sweep: the report files in hydra.sweep.dir
for arg in "$@"; do
    case "$arg" in hydra.sweep.dir=*) dir="${arg#hydra.sweep.dir=}";; esac
done
mkdir -p "$dir"
echo "new report" > "$dir/report.md"
echo "new plot" > "$dir/acc_vs_sparsity.png"
"""


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The script in a repository layout whose docs/results-digits holds the tracked report, dst-train faked."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "compare_digits.sh", root / "scripts")
    (root / "docs" / "results-digits").mkdir(parents=True)
    (root / "docs" / "results-digits" / "report.md").write_text("tracked report\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dst-train").write_text(FAKE_DST_TRAIN)
    (bin_dir / "dst-train").chmod(0o755)
    return root


def run_script(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{root.parent / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(root / "scripts" / "compare_digits.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_compare_digits_leaves_docs_alone_by_default(repo_copy):
    done = run_script(repo_copy)
    assert done.returncode == 0, done.stderr
    assert (repo_copy / "outputs" / "multiruns" / "compare_digits" / "report.md").read_text() == "new report\n"
    assert (repo_copy / "docs" / "results-digits" / "report.md").read_text() == "tracked report\n"
    assert "docs/results-digits/ untouched" in done.stdout


def test_compare_digits_copies_to_docs_when_asked(repo_copy, tmp_path):
    done = run_script(repo_copy, "--docs", str(tmp_path / "sweep"))
    assert done.returncode == 0, done.stderr
    assert (repo_copy / "docs" / "results-digits" / "report.md").read_text() == "new report\n"
    assert (repo_copy / "docs" / "results-digits" / "acc_vs_sparsity.png").exists()
    assert not (repo_copy / "outputs").exists()


def test_compare_digits_refuses_an_unknown_flag(repo_copy):
    done = run_script(repo_copy, "--doc")
    assert done.returncode == 2 and "usage:" in done.stderr
    assert not (repo_copy / "outputs").exists()


@pytest.mark.parametrize("args, named", [(["--only", "bench,gpu"], "'gpu'"), (["--only", ""], "--only"),
                                         (["--fast"], "--fast")])
def test_gpu_check_refuses_an_unknown_part_or_option_before_writing_anything(tmp_path, args, named):
    out_dir = tmp_path / "out"
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), *args, str(out_dir)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert named in result.stderr and "allowed" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not out_dir.exists()
