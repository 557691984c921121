"""Attribution maps: ``attribution(model, x, target, create_graph=False) -> maps`` (plain torch, batched)."""

from robustxai.attributions.base import Attribution
from robustxai.attributions.cam import CAM
from robustxai.attributions.gradcam import GradCAM, GradCAMPlusPlus
from robustxai.attributions.gradient import InputXGradient, Saliency
from robustxai.attributions.integrated_gradients import IntegratedGradients, riemann_alphas
from robustxai.attributions.path_loss import clipped_cross_entropy, loss_path_ig
from robustxai.attributions.postprocess import Postprocess, channel_sum, normalize_to_size, rar_saliency
from robustxai.attributions.smooth_grad import SmoothGrad
from robustxai.attributions.surrogate import SurrogateAttribution

__all__ = [
    "Attribution", "Saliency", "InputXGradient", "IntegratedGradients", "SmoothGrad", "riemann_alphas",
    "loss_path_ig", "clipped_cross_entropy", "Postprocess", "channel_sum", "normalize_to_size", "rar_saliency",
    "CAM", "GradCAM", "GradCAMPlusPlus", "SurrogateAttribution",
]
