"""Grad-CAM / Grad-CAM++ throughput: ours vs pytorch-grad-cam vs the bare forward + backward to the layer.

Usage: .venv/bin/python bench/bench_gradcam.py [--quick] [--synthetic] [--batch 256] [--net mnist_small|cifar_wresnet]

Both libraries compute the same maps (ours with ``relu=True, upsample='bilinear'``; pytorch-grad-cam
min-max scales them on top, which the check below applies to ours). The limit is one forward pass
with the layer's output kept and one ``autograd.grad`` of the target logits to it: the two passes
every gradient CAM needs, with no weighting, ReLU or resize.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pgd import load_inputs  # noqa: E402
from common import REPO_ROOT, apply_threads, base_parser, print_table, ratio_line, time_interleaved  # noqa: E402

from robustxai.attributions import GradCAM, GradCAMPlusPlus  # noqa: E402
from robustxai.attributions.cam import upsample_maps  # noqa: E402
from robustxai.models import BoopathyNet, load_boopathy_network  # noqa: E402

NETWORKS = REPO_ROOT.parent / "shared" / "models" / "boopathy-networks"
NETS = {"mnist_small": ("mnist_smallgap_normal_100.pkl", "small", 1, 28, "features.1"),
        "cifar_wresnet": ("cifar_wresnet_normal_200.pkl", "wresnet", 3, 32, "features.20")}


def build(net: str, batch: int, synthetic: bool) -> tuple[nn.Module, Tensor, Tensor, str]:
    """The released network (or a seeded random one) and its inputs and target layer."""
    file, arch, channels, side, layer = NETS[net]
    path = NETWORKS / file
    torch.manual_seed(0)
    model = load_boopathy_network(path) if path.is_file() else BoopathyNet(arch, channels, 10).eval()
    if channels == 1 and not synthetic:
        x, _ = load_inputs(batch, synthetic=False)
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.rand(batch, channels, side, side, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, layer


def limit(model: nn.Module, layer: str, x: Tensor, y: Tensor) -> Callable[[], None]:
    """The bare passes: a forward keeping the layer's output, and the target logits' gradient w.r.t. it."""
    module = model.get_submodule(layer)

    def run() -> None:
        kept: list[Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: kept.append(out))
        logits = model(x.detach().requires_grad_())
        handle.remove()
        torch.autograd.grad(logits.gather(1, y[:, None]).sum(), kept[0])
    return run


def minmax(m: Tensor) -> Tensor:
    m = m - m.amin((1, 2), keepdim=True)
    return m / (1e-7 + m.amax((1, 2), keepdim=True))


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the Grad-CAM benchmark and return its figures."""
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--net", choices=sorted(NETS), default="mnist_small")
    parser.add_argument("--synthetic", action="store_true", help="uniform-noise inputs instead of MNIST")
    args = parser.parse_args(argv)
    apply_threads(args.threads)
    batch, repeats = (min(args.batch, 32), 2) if args.quick else (args.batch, args.repeats)
    model, x, y, layer = build(args.net, batch, args.synthetic)
    side = x.shape[-1]
    print(f"\n== bench_gradcam: {args.net} (BoopathyNet), layer {layer}, batch {batch}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, pytorch-grad-cam {getattr(pytorch_grad_cam, '__version__', '1.5.x')}")
    targets = [ClassifierOutputTarget(int(c)) for c in y]
    peers = {"gradcam": pytorch_grad_cam.GradCAM(model=model, target_layers=[model.get_submodule(layer)]),
             "gradcam_pp": pytorch_grad_cam.GradCAMPlusPlus(model=model, target_layers=[model.get_submodule(layer)])}
    ours = {"gradcam": GradCAM(layer, relu=True, upsample="bilinear"),
            "gradcam_pp": GradCAMPlusPlus(layer, relu=True, upsample="bilinear")}
    feature_res = {"gradcam": GradCAM(layer), "gradcam_pp": GradCAMPlusPlus(layer)}
    out: dict[str, np.ndarray | Tensor] = {}
    fns: dict[str, Callable[[], None]] = {}
    for kind in ("gradcam", "gradcam_pp"):
        fns[f"ours {kind} (relu, bilinear to {side}x{side})"] = (
            lambda kind=kind: out.__setitem__(f"ours {kind}", ours[kind](model, x, y)))
        fns[f"ours {kind} (signed, feature resolution)"] = lambda kind=kind: feature_res[kind](model, x, y)
        fns[f"pytorch-grad-cam {kind}"] = (
            lambda kind=kind: out.__setitem__(f"peer {kind}", peers[kind](input_tensor=x, targets=targets)))
    fns["limit (bare fwd + bwd to the layer)"] = limit(model, layer, x, y)
    timings = time_interleaved(fns, warmup=1, repeats=repeats)
    med = {k: t.median for k, t in timings.items()}
    print_table(f"median of {repeats}", ["variant", "median s", "images/s", "min s", "max s"],
                [[k, t.median, batch / t.median, min(t.times), max(t.times)] for k, t in timings.items()])
    t_limit = med["limit (bare fwd + bwd to the layer)"]
    figures: dict[str, float] = {"limit_s": t_limit}
    for kind in ("gradcam", "gradcam_pp"):
        t_ours = med[f"ours {kind} (relu, bilinear to {side}x{side})"]
        t_peer = med[f"pytorch-grad-cam {kind}"]
        print(ratio_line(f"ours {kind} / pytorch-grad-cam (speed)", t_peer / t_ours, target=1.0))
        print(ratio_line(f"ours {kind} / limit (speed)", t_limit / t_ours))
        # the same quantity: pytorch-grad-cam min-max scales at the layer's resolution, resizes, scales again
        relu_maps = type(ours[kind])(layer, relu=True)(model, x, y)
        same = minmax(upsample_maps(minmax(relu_maps), (side, side), "bilinear").clamp(min=0))
        diff = float(np.abs(same.numpy() - out[f"peer {kind}"]).max())
        print(f"  max |ours - pytorch-grad-cam| after its min-max scaling = {diff:.2g} (maps in [0, 1])")
        figures |= {f"{kind}_vs_peer": t_peer / t_ours, f"{kind}_vs_limit": t_limit / t_ours,
                    f"{kind}_max_abs_diff": diff}
    for cam in peers.values():
        cam.activations_and_grads.release()
    return figures


if __name__ == "__main__":
    main()
