"""Safe importers of foreign weight files, one module per format; no file's code ever runs.

``woods``: Woods et al.'s legacy ResNet-44 ``.pt`` pickles (``torch.load(weights_only=True)`` with
one stub global). ``boopathy``: Boopathy et al.'s NumPy pickles (a NumPy-only ``find_class``).
Importers import the model modules; model modules import an importer only inside the function
that loads a file, never at module level, so the import graph has no cycle.
"""

from robustxai.models.importers.boopathy import load_boopathy_network, load_boopathy_weights, read_boopathy_file
from robustxai.models.importers.woods import activation_of, load_woods_file, load_woods_weights, woods_resnet_from_file

__all__ = ["activation_of", "load_boopathy_network", "load_boopathy_weights", "load_woods_file",
           "load_woods_weights", "read_boopathy_file", "woods_resnet_from_file"]
