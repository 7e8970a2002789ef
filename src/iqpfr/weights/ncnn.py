"""Read ncnn models (``.param`` text + ``.bin`` weights) into numpy arrays, without ncnn.

ncnn stores a network as a text graph, one layer per line::

    Convolution  Conv_1  1 1  in out  0=32 1=3 4=1 5=1 6=18432 9=2 -23310=1,2.0e-01

(type, name, input and output counts, blob names, then ``key=value`` parameters; a key -23300-k
holds an array ``count,v1,v2,...`` for parameter k), and the ``.bin`` holds each weighted layer's
tensors in graph order. A ``Convolution`` stores its weights with a 4-byte storage tag
(0x01306B47: fp16; zero: fp32) and then, when ``5=1``, ``num_output`` fp32 biases without a tag; a
``PReLU`` stores ``0=num_slope`` fp32 slopes without a tag. Only the layers the Real-ESRGAN family
uses are understood; any other weighted layer is refused, so a model is never half read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
# layers that carry no weights in the .bin (their parameters are all in the .param line)
WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "ReLU", "Sigmoid",
              "Crop", "Padding", "Reshape", "Permute", "Flatten", "Noop"}


class NcnnFormatError(ValueError):
    """The .param/.bin pair is not an ncnn model this reader understands; the message names the file."""


@dataclass
class NcnnLayer:
    """One layer line of a .param file, plus its tensors once the .bin is read."""

    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: dict[int, object]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def int_param(self, key: int, default: int = 0) -> int:
        return int(self.params.get(key, default))


@dataclass
class NcnnModel:
    layers: list[NcnnLayer]

    def of_type(self, kind: str) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.type == kind]


def _parse_value(text: str) -> float | int:
    return float(text) if any(c in text for c in ".eE") else int(text)


def parse_param(path: str | os.PathLike) -> list[NcnnLayer]:
    """The layers of a text ``.param`` file, in graph order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise NcnnFormatError(f"{path}: cannot read the ncnn .param file ({exc})") from None
    lines = [line for line in lines if line.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise NcnnFormatError(f"{path}: not a text ncnn .param file (first line is not {MAGIC})")
    try:
        layer_count = int(lines[1].split()[0])
    except (IndexError, ValueError):
        raise NcnnFormatError(f"{path}: second line must hold the layer and blob counts") from None
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        try:
            kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
            bottoms = fields[4:4 + n_in]
            tops = fields[4 + n_in:4 + n_in + n_out]
            params: dict[int, object] = {}
            for item in fields[4 + n_in + n_out:]:
                key_text, value = item.split("=", 1)
                key = int(key_text)
                if key <= -23300:
                    values = value.split(",")
                    params[-23300 - key] = [_parse_value(v) for v in values[1:1 + int(values[0])]]
                else:
                    params[key] = _parse_value(value)
        except (IndexError, ValueError):
            raise NcnnFormatError(f"{path}: line {number} is not a layer line: {line[:80]!r}") from None
        if len(bottoms) != n_in or len(tops) != n_out:
            raise NcnnFormatError(f"{path}: line {number} names fewer blobs than it counts")
        layers.append(NcnnLayer(kind, name, bottoms, tops, params))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{path}: header says {layer_count} layers, found {len(layers)}")
    return layers


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.offset = data, path, 0

    def take(self, nbytes: int, what: str) -> bytes:
        if self.offset + nbytes > len(self.data):
            raise NcnnFormatError(f"{self.path}: truncated: {what} needs {nbytes} bytes at offset {self.offset}, "
                                  f"the file has {len(self.data)}")
        chunk = self.data[self.offset:self.offset + nbytes]
        self.offset += nbytes
        return chunk

    def raw_fp32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), "<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        tag = int.from_bytes(self.take(4, what), "little")
        if tag == TAG_FP16:
            nbytes = (2 * count + 3) // 4 * 4  # fp16 data is padded to a 4-byte boundary
            return np.frombuffer(self.take(nbytes, what)[:2 * count], "<f2").astype(np.float32)
        if tag == TAG_FP32:
            return self.raw_fp32(count, what)
        raise NcnnFormatError(f"{self.path}: {what}: storage tag 0x{tag:08X} (int8 or quantised weights) is not supported")


def read_ncnn(param_path: str | os.PathLike, bin_path: str | os.PathLike) -> NcnnModel:
    """Parse ``param_path`` and fill each weighted layer's tensors from ``bin_path``.

    Convolution: ``weight`` (out, in, k, k) and ``bias`` (out,) when present; PReLU: ``slope`` (n,).
    Raises NcnnFormatError naming the file when either is malformed, truncated or has bytes left over.
    """
    layers = parse_param(param_path)
    bin_path = Path(bin_path)
    try:
        reader = _Reader(bin_path.read_bytes(), bin_path)
    except OSError as exc:
        raise NcnnFormatError(f"{bin_path}: cannot read the ncnn .bin file ({exc})") from None
    for layer in layers:
        if layer.type == "Convolution":
            out_ch, kernel = layer.int_param(0), layer.int_param(1)
            kernel_h = layer.int_param(11, kernel)
            count = layer.int_param(6)
            if layer.int_param(8) or layer.int_param(19):
                raise NcnnFormatError(f"{bin_path}: {layer.name}: int8 convolutions are not supported")
            if out_ch <= 0 or count % (out_ch * kernel * kernel_h):
                raise NcnnFormatError(f"{param_path}: {layer.name}: weight count {count} does not fit "
                                      f"{out_ch} outputs of {kernel_h}x{kernel}")
            in_ch = count // (out_ch * kernel * kernel_h)
            weight = reader.tagged(count, f"{layer.name} weights")
            layer.weights["weight"] = weight.reshape(out_ch, in_ch, kernel_h, kernel)
            if layer.int_param(5):
                layer.weights["bias"] = reader.raw_fp32(out_ch, f"{layer.name} bias")
        elif layer.type == "PReLU":
            layer.weights["slope"] = reader.raw_fp32(max(1, layer.int_param(0, 1)), f"{layer.name} slopes")
        elif layer.type not in WEIGHTLESS:
            raise NcnnFormatError(f"{param_path}: layer type {layer.type} ({layer.name}) is not supported")
    if reader.offset != len(reader.data):
        raise NcnnFormatError(f"{bin_path}: {len(reader.data) - reader.offset} bytes left over after the last layer "
                              "(the .bin does not belong to this .param)")
    return NcnnModel(layers)
