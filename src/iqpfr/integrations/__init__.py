"""Adapters to the tools people restore faces in (each imports its host library lazily):

* ``iqpfr.integrations.spandrel``: registers iqpfr's networks with spandrel's architecture registry
  (ComfyUI, AUTOMATIC1111/Forge and chaiNNer load models through it); importing it is enough.
* ``iqpfr.integrations.hosts``: the image-layout conversions the host plug-ins share (ComfyUI
  ``IMAGE`` batches, AUTOMATIC1111 uint8 RGB arrays).

The plug-ins themselves live outside the package, in ``integrations/`` of the repository
(a ComfyUI node pack and an AUTOMATIC1111/Forge extension), and call the package's API.
"""
