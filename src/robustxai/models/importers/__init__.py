"""Safe readers of foreign weight files, one module per format; no file's code ever runs.

``woods``: Woods et al.'s legacy ResNet-44 ``.pt`` pickles (``torch.load(weights_only=True)`` with
one stub global). ``boopathy``: Boopathy et al.'s NumPy pickles (a NumPy-only ``find_class``).
Readers know file formats and key layouts only; the model modules import them (``WoodsResNet(weights=...)``,
``load_boopathy_network``, ``woods_resnet_from_file``), never the reverse, so the import graph has no cycle.
"""

from robustxai.models.importers.boopathy import load_boopathy_weights, read_boopathy_file
from robustxai.models.importers.woods import activation_of, load_woods_file, load_woods_weights

__all__ = ["activation_of", "load_boopathy_weights", "load_woods_file", "load_woods_weights", "read_boopathy_file"]
