"""Fuzz the command lines of every entry point with bad input: each case must end with one clear message.

Unknown keys and groups, wrong types, negative and absurd values, empty lists, missing and corrupt data
and checkpoints, a checkpoint of another architecture, a malicious weights file: the run must exit with a
non-zero status, print no Python traceback, and name the key or the file at fault. The cases run two at a
time (subprocesses) so the whole set costs about a minute on two cores.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from robustxai.models.madry_cnn import MadryCNN
from tests.conftest import run_cli

CASES: list[tuple[str, list[str], str]] = [
    # (entry point, overrides ({tmp} = a scratch dir), what the message must name)
    ("train", ["method=sgd_magic"], "method"),
    ("train", ["model=not_a_model"], "not_a_model"),
    ("train", ["no_such_group=x"], "no_such_group"),
    ("train", ["attack=[pgd,unknown_attack]"], "unknown_attack"),
    ("train", ["+method.epsilon=0.1"], "epsilon"),
    ("train", ["method.foo=1"], "foo"),
    ("train", ["trainer.max_epochs=abc"], "max_epochs"),
    ("train", ["data.batch_size=big"], "batch_size"),
    ("train", ["seed=abc"], "seed"),
    ("train", ["method=pgd_at", "method.attack.eps=[1,2]"], "eps"),
    ("train", ["method=pgd_at", "method.attack.eps=-0.3"], "eps"),
    ("train", ["data.batch_size=-1"], "batch_size"),
    ("train", ["method=pgd_at", "method.attack.steps=0"], "steps"),
    ("train", ["trainer.max_epochs=-3"], "max_epochs"),
    ("train", ["attack.pgd.norm=l3"], "norm"),
    ("train", ["data.val_size=100000000"], "val_size"),
    ("train", ["method.optimizer.lr=-1"], "lr"),
    ("train", ["method=pgd_at", "method.attack.eps=1e9", "method.attack.step_size=0"], "step_size"),
    ("train", ["data.test_subset=0"], "test_subset"),
    ("train", ["method=ig_norm", "method.ig_steps=7", "method.attack.approx_factor=5"], "approx_factor"),
    ("train", ["data=mnist", "paths.data_dir={tmp}/nowhere", "data.download=false"], "nowhere"),
    ("train", ["data=mnist", "paths.data_dir={tmp}/corrupt", "data.download=false"], "corrupt"),
    ("train", ["ckpt_path={tmp}/missing.ckpt"], "missing.ckpt"),
    ("eval", [], "ckpt_path"),
    ("eval", ["task=nonsense"], "nonsense"),
    ("eval", ["ckpt_path={tmp}/missing.ckpt"], "missing.ckpt"),
    ("eval", ["ckpt_path={tmp}/garbage.ckpt"], "garbage.ckpt"),
    ("eval", ["ckpt_path={tmp}/madry.ckpt", "model=small_cnn"], "madry.ckpt"),
    ("eval", ["ckpt_path={tmp}/madry.ckpt", "model=madry_cnn", "attack.pgd.eps=-1"], "eps"),
    ("eval", ["ckpt_path={tmp}/madry.ckpt", "model=madry_cnn", "attack=[topk]", "attack.topk.k_top=0"], "k_top"),
    ("eval", ["ckpt_path={tmp}/madry.ckpt", "model=madry_cnn", "metric=[no_metric]"], "no_metric"),
    ("eval", ["model=woods_resnet44", "model.weights={tmp}/missing.pt", "data=cifar10"], "missing.pt"),
    ("eval", ["model=boopathy_small", "model.weights={tmp}/evil.pkl", "data=mnist"], "evil.pkl"),
    ("eval", ["task=explain", "ckpt_path={tmp}/madry.ckpt", "model=madry_cnn", "explain.indices=[]"], "indices"),
    ("analyze", [], "study"),
    ("analyze", ["study=no_such_study"], "no_such_study"),
    ("analyze", ["study=toy_boundary", "study.seeds=[]"], "seeds"),
    ("analyze", ["study=toy_boundary", "study.epochs=-1"], "epochs"),
]


def _scratch(tmp: Path) -> None:
    """The bad files the cases point at: corrupt MNIST, a garbage and a foreign checkpoint, a malicious pickle."""
    raw = tmp / "corrupt" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"not an idx file")
    (tmp / "garbage.ckpt").write_bytes(b"\x00garbage")
    torch.manual_seed(0)
    model = MadryCNN()
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "robustxai": {"model_class": "robustxai.models.madry_cnn.MadryCNN"}}, tmp / "madry.ckpt")

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp / "pwned",))

    (tmp / "evil.pkl").write_bytes(pickle.dumps([Evil()]))


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[int, tuple[int, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    _scratch(tmp)

    def run(i: int) -> tuple[int, str]:
        script, overrides, _ = CASES[i]
        args = [o.format(tmp=tmp) for o in overrides] + [f"hydra.run.dir={tmp}/run{i}"]
        proc = run_cli(script, *args, check=False, timeout=300)
        return proc.returncode, proc.stdout + proc.stderr

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(range(len(CASES)), pool.map(run, range(len(CASES)))))
    assert not (tmp / "pwned").exists(), "the malicious pickle ran code"
    return results


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{s}:{' '.join(o) or '(none)'}" for s, o, _ in CASES])
def test_bad_input_ends_with_one_clear_message(case, outcomes):
    code, output = outcomes[case]
    names = CASES[case][2]
    assert code != 0, f"exit status 0 for bad input:\n{output[-2000:]}"
    assert "Traceback (most recent call last)" not in output, f"a traceback instead of a message:\n{output[-3000:]}"
    assert names in output, f"the message does not name {names!r}:\n{output[-2000:]}"


def test_a_multirun_with_a_failing_job_finishes_the_others_and_names_it(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("train", "-m", "data.batch_size=16,-1", "trainer.max_steps=2", "attack=[]", "data.test_subset=20",
                   f"hydra.sweep.dir={sweep}", check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback (most recent call last)" not in output
    assert "1 job(s) of the multirun failed" in output and "job 1 (data.batch_size=-1" in output
    assert "batch_size must be >= 1" in output
    assert (sweep / "0" / "results.json").is_file() and (sweep / "1" / "failed.json").is_file()
    assert "data.batch_size=16" in (sweep / "comparison.md").read_text()  # the table of the job that finished
