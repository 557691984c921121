"""Every config file composes and instantiates; bad values are refused with the key named."""

from __future__ import annotations

import inspect

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from robustxai.errors import ConfigError
from robustxai.tasks.common import build_attack_callbacks
from robustxai.utils.config import instantiate
from tests.conftest import CONF, build_everything, run_cli
from tests.conftest import config_options as options


# components that only work with a particular partner (a model built for one image size; a generative method)
PAIRED_WITH = {"model=kim_vaegan_cifar": ["data=cifar10"], "method=vaegan": ["model=kim_vaegan_mnist"]}


@pytest.mark.parametrize("override", [f"data={o}" for o in options("data")] + [f"model={o}" for o in options("model")]
                         + [f"method={o}" for o in options("method")]
                         + [f"method/attack={o}" for o in options("method/attack")]
                         + [f"method/optimizer={o}" for o in options("method/optimizer")]
                         + [f"attack=[{','.join(options('attack'))}]"]
                         + [f"callbacks={o}" for o in options("callbacks")]
                         + [f"logger={o}" for o in options("logger")]
                         + [f"trainer={o}" for o in options("trainer")]
                         + [f"debug={o}" for o in options("debug")]
                         + [f"experiment={o}" for o in options("experiment")])
def test_train_config_composes_and_instantiates(override, compose_cfg):
    extra = ["method=pgd_at"] if override.startswith("method/attack") else []
    extra += PAIRED_WITH.get(override, [])
    build_everything(compose_cfg("train", [override, *extra]))


@pytest.mark.parametrize("threat", options("threat"))
def test_every_threat_model_matches_a_dataset(threat):
    assert threat in options("data")


def test_eval_config_composes(compose_cfg):
    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", "attack=[pgd,fgsm,pgd_l2]"])
    build_everything(cfg)
    assert set(cfg.attack) == {"pgd", "fgsm", "pgd_l2"}


def test_threat_model_follows_the_dataset(compose_cfg):
    cfg = compose_cfg("train", ["data=fashion_mnist", "method=pgd_at"])
    assert cfg.method.attack.eps == 0.1 and cfg.attack.pgd.eps == 0.1 and cfg.attack.pgd.steps == 20


@pytest.mark.parametrize("override, key, message", [
    ("method.attack.eps=-0.1", "method.attack", "eps must be >= 0"),
    ("attack.pgd.steps=0", "attack.pgd", "steps must be >= 1"),
    ("attack.pgd.norm=l3", "attack.pgd.norm", "must be one of 'linf', 'l2'"),
    ("+attack.pgd.epsilon=0.1", "attack.pgd.epsilon", "has no argument 'epsilon'"),
    ("data.batch_size=0", "data", "batch_size must be >= 1"),
    ("attack.pgd.steps=ten", "attack.pgd.steps", "must be int"),
    ("data.test_subset=many", "data.test_subset", "must be int or None"),
])
def test_bad_values_are_refused_naming_the_key(override, key, message, compose_cfg):
    cfg = compose_cfg("train", ["method=pgd_at", override])
    with pytest.raises(ConfigError) as err:
        build_everything(cfg)
    assert f"`{key}" in str(err.value) and message in str(err.value)


def test_cli_refuses_unknown_method_and_negative_eps_before_work(tmp_path):
    proc = run_cli("train", "method=sgd_magic", f"hydra.run.dir={tmp_path}/a", check=False)
    assert proc.returncode != 0
    assert "Could not find 'method/sgd_magic'" in proc.stderr and "pgd_at" in proc.stderr

    proc = run_cli("train", "method=pgd_at", "method.attack.eps=-0.3", f"hydra.run.dir={tmp_path}/b", check=False)
    assert proc.returncode != 0
    assert "method.attack" in proc.stderr and "eps must be >= 0, got -0.3" in proc.stderr
    assert not (tmp_path / "b" / "checkpoints").exists()  # refused before any training


# -- the groups that other configs use, checked by the settings of what they build ----------------------
IMAGE_THREATS = [t for t in options("threat") if "explanation" in OmegaConf.load(CONF / "threat" / f"{t}.yaml")]


@pytest.mark.parametrize("threat", options("threat"))
def test_each_threat_file_sets_the_attacks_built_for_its_dataset(threat, compose_cfg):
    spec = OmegaConf.load(CONF / "threat" / f"{threat}.yaml")
    attacks = ["pgd", "topk"] if threat in IMAGE_THREATS else ["pgd"]
    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", f"threat={threat}", f"attack=[{','.join(attacks)}]"])
    built = {cb.name: cb.attack for cb in build_attack_callbacks(cfg, CONF)}
    assert (built["pgd"].eps, built["pgd"].step_size, built["pgd"].steps) == \
        (spec.linf.eps, spec.linf.step_size, spec.linf.steps)
    if "topk" in built:
        topk, expl = built["topk"], spec.explanation
        assert (topk.eps, topk.steps, topk.k_top, topk.eval_k) == (expl.eps, expl.steps, expl.k_top, expl.eval_k_top)
        assert topk.attribution.points_per_input == expl.ig_steps


@pytest.mark.parametrize("attribution", options("attribution"))
def test_each_attribution_plugs_into_an_attack_on_explanations(attribution, compose_cfg):
    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", "data=mnist", "attack=[topk]",
                               f"attribution@attack.topk.attribution={attribution}"])
    (callback,) = build_attack_callbacks(cfg, CONF)
    expected = instantiate(compose_cfg("eval", [f"+attribution={attribution}", "data=mnist"]).attribution,
                           "attribution")
    assert type(callback.attack.attribution) is type(expected)
    assert vars(callback.attack.attribution).keys() == vars(expected).keys()


def test_the_metric_group_chooses_the_map_metrics_of_explanation_attacks(compose_cfg):
    cfg = compose_cfg("eval", ["ckpt_path=x.ckpt", "data=mnist", "attack=[topk]", "metric=[kendall,topk_intersection]"])
    (callback,) = build_attack_callbacks(cfg, CONF)
    assert set(callback.metrics) == {"kendall", "topk_intersection"}
    assert callback.metrics["topk_intersection"].k == callback.attack.eval_k == cfg.threat.explanation.eval_k_top
    assert callback.metrics["kendall"].nan_policy == "omit"


@pytest.mark.parametrize("task", options("task"))
def test_each_task_names_a_function_taking_the_config(task, compose_cfg):
    cfg = compose_cfg("eval", [f"task={task}", "ckpt_path=x.ckpt"])
    run = get_method(cfg.task._target_)
    assert callable(run) and list(inspect.signature(run).parameters)[:2] == ["cfg", "overrides"]


@pytest.mark.parametrize("explain", options("explain"))
def test_explain_settings_build_with_their_values(explain, compose_cfg):
    cfg = compose_cfg("eval", [f"explain={explain}", "task=explain"])
    settings = instantiate(cfg.explain, "explain")
    assert settings.indices == list(cfg.explain.indices) and settings.rho == cfg.explain.rho
    assert settings.attack().eps == cfg.explain.rho and settings.attack().mode == "plain"


def _targets() -> list[tuple[str, str]]:
    found = []
    for path in sorted(CONF.rglob("*.yaml")):
        for line in path.read_text().splitlines():
            key, _, value = line.strip().partition(":")
            if key == "_target_" and value.strip().startswith("robustxai."):
                found.append((str(path.relative_to(CONF)), value.strip()))
    return found


@pytest.mark.parametrize("where, target", _targets())
def test_every_target_is_spelled_by_its_defining_module(where, target):
    """One spelling of ``_target_`` paths: the module that defines the object, never a package re-export."""
    obj = get_method(target) if "." in target else None
    module, _, name = target.rpartition(".")
    assert obj.__module__ == module, f"{where}: write {obj.__module__}.{name} instead of {target}"
