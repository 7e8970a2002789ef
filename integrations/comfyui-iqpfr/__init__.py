"""ComfyUI node pack for iqpfr: copy or link this folder into ``ComfyUI/custom_nodes/``.

The nodes call the installed ``iqpfr`` package (``pip install "iqpfr[face,upsample]"`` in ComfyUI's
Python); see nodes.py.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
