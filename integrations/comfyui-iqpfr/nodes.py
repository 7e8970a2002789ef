"""ComfyUI nodes: load an iqpfr restorer, restore the faces of an IMAGE batch.

ComfyUI's node contract: a class with ``INPUT_TYPES`` (a classmethod returning the inputs),
``RETURN_TYPES``, ``FUNCTION`` (the method ComfyUI calls with the inputs as keyword arguments,
returning a tuple) and ``CATEGORY``. ``IMAGE`` is a float tensor (B, H, W, 3), RGB in [0, 1].
The work is done by ``iqpfr.FaceRestorer`` through ``iqpfr.integrations.hosts``.
"""

from __future__ import annotations

CATEGORY = "image/restoration/iqpfr"
RESTORER_TYPE = "IQPFR_RESTORER"


def _extra_model_folders() -> list[str]:
    """ComfyUI's ``facerestore_models`` folders when running inside ComfyUI, else none."""
    try:
        import folder_paths  # ComfyUI's own module

        return list(folder_paths.get_folder_paths("facerestore_models"))
    except Exception:
        return []


class IQPFRLoadRestorer:
    """Load a face restorer: the embedded iqpfr default, a cached zoo model or a weight file."""

    @classmethod
    def INPUT_TYPES(cls):
        from iqpfr.integrations.hosts import DEFAULT_MODEL, model_choices

        return {
            "required": {
                "model": (model_choices(_extra_model_folders()), {"default": DEFAULT_MODEL}),
                "detector": (["dlib-hog", "dlib-cnn", "retinaface"], {"default": "dlib-hog"}),
                "device": (["auto", "cpu", "cuda"], {"default": "auto"}),
            }
        }

    RETURN_TYPES = (RESTORER_TYPE,)
    RETURN_NAMES = ("restorer",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model, detector="dlib-hog", device="auto"):
        from iqpfr.integrations.hosts import load_restorer

        return (load_restorer(model, device=device, detector=detector),)


class IQPFRRestoreFaces:
    """Detect, restore and paste back every face of each image of the batch."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "restorer": (RESTORER_TYPE,),
                "auto_fidelity": ("BOOLEAN", {"default": True, "tooltip": "each face's own quality sets w"}),
                "fidelity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                       "tooltip": "w when auto_fidelity is off: 0 quality, 1 fidelity"}),
                "quality_target": ("FLOAT", {"default": 0.9, "min": 0.0, "max": 1.0, "step": 0.01}),
            },
            "optional": {
                "upscale": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 8.0, "step": 0.5}),
                "only_center_face": ("BOOLEAN", {"default": False}),
                "face_upsample": ("BOOLEAN", {"default": True}),
            },
        }

    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "restored_faces")
    FUNCTION = "restore"
    CATEGORY = CATEGORY

    def restore(self, image, restorer, auto_fidelity=True, fidelity=0.5, quality_target=0.9, upscale=1.0,
                only_center_face=False, face_upsample=True):
        from iqpfr.integrations.hosts import parse_fidelity, restore_comfy_batch

        result = restore_comfy_batch(
            restorer, image, fidelity=parse_fidelity(fidelity, auto_fidelity), quality=quality_target,
            upscale=upscale, only_center_face=only_center_face,
            face_upsample=None if face_upsample else False,
        )
        return (result.images, result.faces)


NODE_CLASS_MAPPINGS = {
    "IQPFRLoadRestorer": IQPFRLoadRestorer,
    "IQPFRRestoreFaces": IQPFRRestoreFaces,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "IQPFRLoadRestorer": "Load face restorer (iqpfr)",
    "IQPFRRestoreFaces": "Restore faces (iqpfr)",
}
