"""Face tracks across video frames: association, landmark refinement between detections,
gap interpolation, centred temporal smoothing, per-track quality, and temporal blending of the
restored crops.

Method (``TrackingOptions`` holds the parameters):

1. **Detection on key frames.** The detector runs every ``detect_every`` frames (and on the next
   frame whenever a track's refinement fails) on a copy shrunk to ``detect_side`` px; dlib's shape
   predictor then places the landmarks at full resolution. Between key frames each live track's
   landmarks come from the shape predictor alone, run in the track's last box moved and scaled with
   its landmarks (``DlibDetector.refine``, ~2 ms a face against ~100+ ms for a HOG pass); a refinement
   whose eye distance changes by more than 35 % or whose centre moves by more than one eye distance
   is dropped and forces a detection. Detectors without a separate landmark stage detect every frame.
2. **Association.** Key-frame detections are matched to live tracks greedily by IoU of the box
   (>= ``iou_match``); unmatched detections open new tracks (ids count up from 0 in order of
   appearance: the face index of every frame's records); a track unmatched at a key frame loses its
   refined observations since its last match (they tracked nothing) and ends when it has not been
   seen for ``max_gap`` frames.
3. **Gaps and smoothing.** Frames wait ``lookahead`` frames in a buffer. A frame where a track was
   not observed but which lies between two observations at most ``max_gap + 1`` frames apart gets
   linearly interpolated landmarks. The 5 (and 68) landmarks are then smoothed with a centred
   Gaussian of ``smooth_sigma`` frames (radius ceil(2 sigma)) over the observed and interpolated
   frames: no lag for steady motion, jitter averaged out.
4. **Per-track quality.** With ``fidelity="auto"`` the input NIQE is measured on up to
   ``quality_samples`` buffered frames of a track when its first frame leaves the buffer; the median
   sets the track's w, strength and generative share for its whole life (no per-frame flicker of w).
5. **Temporal blending.** After the network, each track's restored crop is blended with its previous
   blended crop: ``out_t = r_t + g (out_{t-1} - r_t)`` with ``g = blend * exp(-(d / blend_tau)^2)``,
   ``d`` the per-pixel change of the aligned *input* crops (the signed difference Gaussian-blurred,
   sigma = S/64, then its absolute value, so per-frame noise does not count as change): where
   the input did not change the output does not either (codebook flicker damped), where it moved
   (mouth, blink) the new restoration is used.

``TrackingOptions.independent()`` is the baseline "tracking off": detection on every frame, raw
landmarks, per-frame quality, no blending.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import numpy as np

from iqpfr.face.detect import DetectedFace, FaceDetector
from iqpfr.face.pipeline import FaceFilter


@dataclass
class TrackingOptions:
    """Parameters of the tracker (see the module docstring for the method)."""

    enabled: bool = True
    detect_every: int = 5
    detect_side: int = 640
    smooth_sigma: float = 1.5
    max_gap: int = 12
    iou_match: float = 0.3
    quality_samples: int = 3
    blend: float = 0.6
    blend_tau: float = 0.05

    @classmethod
    def independent(cls, detect_side: int = 640) -> TrackingOptions:
        """Tracking off: every frame detected and restored on its own."""
        return cls(enabled=False, detect_every=1, detect_side=detect_side, smooth_sigma=0.0, max_gap=0, blend=0.0)

    @property
    def radius(self) -> int:
        return int(math.ceil(2.0 * self.smooth_sigma)) if self.smooth_sigma > 0 else 0

    @property
    def lookahead(self) -> int:
        """Frames a frame waits before its smoothed landmarks are final."""
        return max(self.radius, self.max_gap) if self.enabled else 0

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("enabled", "detect_every", "detect_side", "smooth_sigma", "max_gap",
                                              "iou_match", "quality_samples", "blend", "blend_tau")}


@dataclass
class Observation:
    landmarks: np.ndarray  # (5, 2), or (73, 2) = 5 + 68 when the detector gives 68 points
    box: np.ndarray
    score: float
    detected: bool  # from a detection pass (True) or a refinement (False)


@dataclass
class Track:
    """One face over time. ``quality``: (input_niqe, strength, fidelity, generative) once measured."""

    id: int
    observations: dict[int, Observation] = field(default_factory=dict)
    frames: list[int] = field(default_factory=list)
    last_seen: int = -1
    last_detected: int = -1
    first_frame: int | None = None
    last_frame: int | None = None
    emitted: int = 0
    quality: tuple[float, float, float, float] | None = None
    fidelity: float | None = None  # a fixed w (fidelity given, not "auto")

    def add(self, index: int, obs: Observation) -> None:
        if index not in self.observations:
            bisect.insort(self.frames, index)
        self.observations[index] = obs
        self.last_seen = max(self.last_seen, index)
        if obs.detected:
            self.last_detected = max(self.last_detected, index)

    def drop_after(self, index: int) -> None:
        """Forget refined observations after ``index`` (the face was not confirmed by detection)."""
        for frame in [f for f in self.frames if f > index]:
            del self.observations[frame]
        self.frames = [f for f in self.frames if f <= index]
        self.last_seen = self.frames[-1] if self.frames else -1

    def prune(self, before: int) -> None:
        cut = bisect.bisect_left(self.frames, before)
        for frame in self.frames[:cut]:
            del self.observations[frame]
        self.frames = self.frames[cut:]

    def value_at(self, index: int, max_gap: int) -> np.ndarray | None:
        """Observed landmarks at ``index``, or interpolated across a gap of at most ``max_gap`` frames."""
        obs = self.observations.get(index)
        if obs is not None:
            return obs.landmarks
        pos = bisect.bisect_left(self.frames, index)
        if pos == 0 or pos == len(self.frames):
            return None
        before, after = self.frames[pos - 1], self.frames[pos]
        if after - before > max_gap + 1:
            return None
        a, b = self.observations[before].landmarks, self.observations[after].landmarks
        if a.shape != b.shape:
            return None
        t = (index - before) / (after - before)
        return (1.0 - t) * a + t * b

    def box_near(self, index: int) -> np.ndarray:
        frame = self.frames[min(bisect.bisect_right(self.frames, index), len(self.frames)) - 1]
        return self.observations[frame].box


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _eye_distance(landmarks5: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks5[0] - landmarks5[1]))


def _stack(face: DetectedFace) -> np.ndarray:
    if face.landmarks68 is None:
        return np.asarray(face.landmarks, np.float64)
    return np.concatenate([np.asarray(face.landmarks, np.float64), np.asarray(face.landmarks68, np.float64)])


class FaceTracker:
    """Observe frames in order (``observe``), then ask for each frame's smoothed faces (``faces_at``)
    once ``lookahead`` later frames have been observed (or at the end)."""

    def __init__(self, detector: FaceDetector, options: TrackingOptions, face_filter: FaceFilter | None = None):
        self.detector = detector
        self.options = options
        self.face_filter = face_filter or FaceFilter()
        self.tracks: list[Track] = []
        self.finished: list[Track] = []
        self._next_id = 0
        self.registry: dict[int, Track] = {}
        self._last_detect = -(10 ** 9)
        self._force_detect = True
        self.detections = 0
        self.refinements = 0
        self._can_refine = hasattr(detector, "refine") and options.enabled and options.detect_every > 1

    # ------------------------------------------------------------------------------ observation

    def _detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        import cv2

        height, width = rgb.shape[:2]
        side = self.options.detect_side
        scale = side / max(height, width) if side and max(height, width) > side else 1.0
        if scale == 1.0:
            faces = self.detector.detect(rgb)
        else:
            small = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                               interpolation=cv2.INTER_AREA)
            faces = []
            for face in self.detector.detect(small):
                box = face.box / scale
                if hasattr(self.detector, "refine"):  # landmarks at full resolution
                    faces.append(self.detector.refine(rgb, box, face.score))
                else:
                    faces.append(DetectedFace(box, face.score, face.landmarks / scale,
                                              None if face.landmarks68 is None else face.landmarks68 / scale))
        self.detections += 1
        faces, _ = self.face_filter.select(faces, (width, height))
        return faces

    def observe(self, index: int, rgb: np.ndarray) -> None:
        """Detect or refine the faces of frame ``index`` ((H, W, 3) uint8 RGB); frames in order."""
        opts = self.options
        live = [t for t in self.tracks if index - t.last_seen <= max(opts.max_gap, 1)]
        key = (not self._can_refine or self._force_detect or index - self._last_detect >= opts.detect_every
               or not live)
        if key:
            self._key_frame(index, rgb, live)
        else:
            self._refine(index, rgb, live)
        # tracks not seen for longer than a gap can bridge are over
        for track in list(self.tracks):
            if index - track.last_seen > opts.max_gap and track.last_seen < index:
                self.tracks.remove(track)
                self.finished.append(track)

    def _key_frame(self, index: int, rgb: np.ndarray, live: list[Track]) -> None:
        faces = self._detect(rgb)
        self._last_detect = index
        self._force_detect = False
        pairs = sorted(((iou(f.box, t.box_near(index)), fi, ti) for fi, f in enumerate(faces)
                        for ti, t in enumerate(live)), reverse=True)
        used_f, used_t = set(), set()
        for overlap, fi, ti in pairs:
            if overlap < self.options.iou_match or fi in used_f or ti in used_t:
                continue
            used_f.add(fi)
            used_t.add(ti)
            face = faces[fi]
            live[ti].add(index, Observation(_stack(face), np.asarray(face.box, np.float64), face.score, True))
        for ti, track in enumerate(live):
            if ti not in used_t and track.last_detected >= 0:
                track.drop_after(track.last_detected)
        for fi, face in enumerate(faces):
            if fi in used_f:
                continue
            track = Track(self._next_id)
            self._next_id += 1
            self.registry[track.id] = track
            track.add(index, Observation(_stack(face), np.asarray(face.box, np.float64), face.score, True))
            self.tracks.append(track)

    def _refine(self, index: int, rgb: np.ndarray, live: list[Track]) -> None:
        height, width = rgb.shape[:2]
        for track in live:
            if track.last_seen != index - 1:
                continue  # lost since the last frame: the next key frame looks for it
            anchor = track.observations[track.last_detected] if track.last_detected in track.observations else None
            last = track.observations[track.last_seen]
            if anchor is None:
                continue
            # the detection box, moved and scaled with the landmarks since that detection
            ratio = _eye_distance(last.landmarks[:5]) / max(_eye_distance(anchor.landmarks[:5]), 1e-6)
            shift = last.landmarks[:5].mean(axis=0) - anchor.landmarks[:5].mean(axis=0)
            centre = (anchor.box[:2] + anchor.box[2:]) / 2 + shift
            half = (anchor.box[2:] - anchor.box[:2]) / 2 * ratio
            box = np.concatenate([centre - half, centre + half])
            if box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height:
                self._force_detect = True
                continue
            face = self.detector.refine(rgb, box, last.score)
            self.refinements += 1
            points = _stack(face)
            eye_ratio = _eye_distance(points[:5]) / max(_eye_distance(last.landmarks[:5]), 1e-6)
            moved = np.linalg.norm(points[:5].mean(axis=0) - last.landmarks[:5].mean(axis=0))
            if not 0.65 < eye_ratio < 1.35 or moved > _eye_distance(last.landmarks[:5]):
                self._force_detect = True  # the predictor lost the face: look again next frame
                continue
            track.add(index, Observation(points, box, last.score, False))

    # --------------------------------------------------------------------------------- emission

    def faces_at(self, index: int) -> list[tuple[Track, np.ndarray]]:
        """(track, smoothed landmarks (5 or 73, 2)) of each face in frame ``index``, by track id.

        Call after frame ``index + lookahead`` was observed (or at the end of the video)."""
        out = []
        opts = self.options
        radius = opts.radius
        sigma = max(opts.smooth_sigma, 1e-6)
        for track in sorted(self.tracks + self.finished, key=lambda t: t.id):
            centre = track.value_at(index, opts.max_gap)
            if centre is None:
                continue
            total, weight = np.zeros_like(centre), 0.0
            for frame in range(index - radius, index + radius + 1):
                value = centre if frame == index else track.value_at(frame, opts.max_gap)
                if value is None or value.shape != centre.shape:
                    continue
                w = math.exp(-((frame - index) ** 2) / (2.0 * sigma * sigma))
                total += w * value
                weight += w
            out.append((track, total / weight))
            if track.first_frame is None:
                track.first_frame = index
            track.last_frame = index
            track.emitted += 1
        return out

    def prune(self, emitted: int) -> None:
        """Forget what frames before ``emitted`` (the last frame handed out) no longer need."""
        keep_from = emitted - self.options.radius - self.options.max_gap - 1
        for track in self.tracks:
            track.prune(keep_from)
        self.finished = [t for t in self.finished if t.frames and t.frames[-1] + self.options.radius >= emitted]

    def all_tracks(self) -> list[Track]:
        """Every track ever opened, by id."""
        return [self.registry[k] for k in sorted(self.registry)]


class TemporalBlender:
    """Blend each track's restored crop with its previous one where the aligned input did not change
    (see the module docstring, step 5)."""

    def __init__(self, weight: float, tau: float):
        self.weight, self.tau = float(weight), float(tau)
        self._previous: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

    def __call__(self, index: int, track_id: int, crop: np.ndarray, restored: np.ndarray) -> np.ndarray:
        """The blended restored crop (S, S, 3) float32 in [0, 1] for ``track_id`` at frame ``index``."""
        import cv2

        out = restored
        previous = self._previous.get(track_id)
        if self.weight > 0 and previous is not None and previous[0] == index - 1 and previous[2].shape == out.shape:
            _, last_crop, last_out = previous
            if last_crop.shape == crop.shape:
                # blurred before the absolute value: per-frame noise averages out, a moving edge does not
                sigma = max(crop.shape[0] / 64.0, 0.5)
                change = np.abs(cv2.GaussianBlur((crop - last_crop).astype(np.float32), (0, 0), sigmaX=sigma))
                change = change.mean(axis=2)
                gain = (self.weight * np.exp(-np.square(change / self.tau))).astype(np.float32)
                out = (out + gain[..., None] * (last_out - out)).astype(np.float32)
        self._previous[track_id] = (index, crop, out)
        for key in [k for k, v in self._previous.items() if v[0] < index - 1]:
            del self._previous[key]
        return out
