"""The code location Dagster loads (workspace.yaml): every model declared in retrain.yaml.

The configuration is read from ``RETRAIN_CONFIG`` (default ./retrain.yaml); an invalid file fails here
with a message naming the bad key, which ``dagster dev`` shows as the code location's load error.
"""

from retrain_assets.defs.definitions import build_definitions
from retrain_assets.settings import load_settings

defs = build_definitions(load_settings())
