"""The settings blocks, one module per domain, below every domain.

Why a leaf package: the configuration is read by every command, including the cheap ones (``retrain
--help``, ``retrain config``), and by every domain. These modules import pydantic and the standard
library only, so loading a configuration never pulls in scipy, scikit-learn or Dagster, and the imports
run one way: the domains import their settings from here, never the reverse.
:mod:`retrain_assets.settings` assembles the blocks into the file's shape.
"""
