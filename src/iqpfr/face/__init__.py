"""Face detection, FFHQ alignment, paste-back and colour fix (dlib is imported only when a detector is built)."""

from iqpfr.face.align import FFHQ_TEMPLATE_512, alignment_affine, estimate_similarity, warp_face
from iqpfr.face.color import adain_color_fix, color_fix, wavelet_color_fix
from iqpfr.face.detect import DetectedFace, DlibDetector, FaceDetector, RetinaFaceDetector, create_detector
from iqpfr.face.paste import inverse_affine, paste_face, soft_face_mask
from iqpfr.face.pipeline import FaceFilter, FaceRecord, crop_faces, find_faces, paste_faces

__all__ = [
    "FFHQ_TEMPLATE_512",
    "DetectedFace",
    "DlibDetector",
    "FaceDetector",
    "FaceFilter",
    "FaceRecord",
    "RetinaFaceDetector",
    "adain_color_fix",
    "alignment_affine",
    "color_fix",
    "create_detector",
    "crop_faces",
    "estimate_similarity",
    "find_faces",
    "inverse_affine",
    "paste_face",
    "paste_faces",
    "soft_face_mask",
    "warp_face",
    "wavelet_color_fix",
]
