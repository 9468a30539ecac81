"""The one protocol -> config class table (``protocol:`` in an experiment file).

The task functions of each protocol are registered beside it in
:data:`croft.experiments.protocols.PROTOCOLS` (a test keeps the two in step).
"""

from __future__ import annotations

from croft.experiments.config import ExperimentBase, ImagenetConfig, LodoConfig
from croft.experiments.synthetic import SyntheticConfig

CONFIGS: dict[str, type[ExperimentBase]] = {
    "lodo": LodoConfig,
    "imagenet": ImagenetConfig,
    "synthetic": SyntheticConfig,
}
