"""kaio's data plane for your own trainer (docs/data-plane.md).

`kaio.client` speaks the protocol (numpy only); `kaio.torch` has
KaioDataset and KaioLoader for PyTorch.
"""

from kaio.client import KaioConnectionLost, KaioError

__version__ = "0.1.0"
__all__ = ["KaioError", "KaioConnectionLost"]
