"""hybrid: fused image + catalog classification of transient candidates from time-domain surveys.

The data's way through (see the README): simulated or real frames -> subtraction -> detection and
stamps -> curation -> dataset directory -> models -> evaluation -> export.
"""

from hybrid import config as _config  # noqa: F401  (registers the conf/ resolvers)

__version__ = "0.1.0"
