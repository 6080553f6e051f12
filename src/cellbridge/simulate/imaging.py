"""Simulated fluorescence microscopy of DNA-stained nuclei whose morphology follows the cell state.

Morphology model
----------------
Each cell type has its own level (in [0, 1]) of six traits: nucleus size,
elongation, DNA stain brightness, chromatin texture contrast, texture grain size
and the radial chromatin distribution (dense periphery vs dense centre). Each
trait's levels over the types are a permutation of evenly spaced values, so every
type differs from every other in every trait (by at least ``1 / (n_types - 1)`` of
the trait's range), but no single trait orders all types.

Activation acts non-linearly (sigmoids with trait-specific midpoints, and a
type-specific gain for the size response): activated nuclei are larger, rounder,
dimmer per pixel, have smoother chromatin and lose peripheral heterochromatin
(central shift of the radial profile), the phenotype Yang et al. (2021) linked to
expression in naive T cells. Every trait carries per-nucleus noise.

Imaging model
-------------
Nuclei (ellipses with a slightly irregular outline and random orientation) are
rendered in photo-electrons, placed without touching in a field, blurred by a
Gaussian point-spread function, multiplied by an uneven illumination, joined by a
smooth autofluorescence background, and recorded with Poisson shot noise, a camera
offset (about 100 ADU) and Gaussian read noise as 16-bit integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = [
    "MORPHOLOGY_TRAITS",
    "ImageSimulation",
    "nucleus_extent",
    "nucleus_traits",
    "place_nuclei",
    "render_field",
    "render_nucleus",
    "simulate_images",
    "type_morphology_levels",
]

#: Traits whose level depends on the cell type.
MORPHOLOGY_TRAITS = ("size", "elongation", "brightness", "texture_contrast", "texture_scale", "radial")

#: Relative amplitudes of the 2nd, 3rd and 4th outline harmonics.
_HARMONICS = np.array([2, 3, 4])
_HARMONIC_WEIGHTS = np.array([1.0, 0.5, 0.3])
#: Smallest gap between two nuclei and between a nucleus and the field border (px).
_NUCLEUS_GAP = 4.0
_BORDER_GAP = 3.0
#: Standard deviation of the Gaussian point-spread function (px).
_PSF_SIGMA = 1.0
_CAMERA_OFFSET = 100.0
_READ_NOISE = 3.0
MIN_RADIUS, MAX_RADIUS = 7.0, 16.0


def _sigmoid01(x: np.ndarray, midpoint: float, width: float) -> np.ndarray:
    """Sigmoid of ``x`` rescaled to run from 0 at x=0 to 1 at x=1."""

    def s(v):
        return 1.0 / (1.0 + np.exp(-(v - midpoint) / width))

    return (s(x) - s(0.0)) / (s(1.0) - s(0.0))


def type_morphology_levels(
    n_types: int, *, seed: int | np.random.Generator | np.random.SeedSequence | None = 0
) -> pd.DataFrame:
    """Per-type level in [0, 1] of each trait in :data:`MORPHOLOGY_TRAITS`, plus the activation gain.

    Each column is a random permutation of ``linspace(0, 1, n_types)``, so any two
    types differ in every trait.

    Returns
    -------
    pandas.DataFrame
        ``n_types`` rows (type codes) and one column per trait plus ``activation_gain``.
    """
    if n_types < 2:
        raise ValueError(f"n_types must be at least 2, got {n_types}")
    rng = np.random.default_rng(seed)
    levels = np.linspace(0.0, 1.0, n_types)
    cols = {trait: rng.permutation(levels) for trait in (*MORPHOLOGY_TRAITS, "activation_gain")}
    return pd.DataFrame(cols, index=pd.RangeIndex(n_types, name="type_code"))


def nucleus_traits(
    states: pd.DataFrame,
    *,
    type_levels: pd.DataFrame | None = None,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> pd.DataFrame:
    """Map cell states to per-nucleus morphology parameters (with per-nucleus noise).

    Parameters
    ----------
    states
        Output of :func:`~cellbridge.simulate.simulate_states`.
    type_levels
        Output of :func:`type_morphology_levels`; drawn from ``seed`` when omitted.
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    pandas.DataFrame
        Indexed like ``states``, columns ``radius`` (equivalent radius, px),
        ``aspect`` (major/minor axis ratio), ``orientation`` (radians),
        ``brightness`` (mean stain signal, photo-electrons), ``texture_contrast``,
        ``texture_scale`` (px), ``radial_bias`` (> 0: dense periphery, < 0: dense
        centre) and ``irregularity`` (outline roughness).
    """
    rng = np.random.default_rng(seed)
    n_types = len(states["cell_type"].cat.categories)
    if type_levels is None:
        type_levels = type_morphology_levels(n_types, seed=rng)
    lv = type_levels.iloc[states["cell_type"].cat.codes.to_numpy()].reset_index(drop=True)
    act = states["activation"].to_numpy()
    n = len(states)

    def noise(sd):
        return np.exp(rng.normal(0.0, sd, n))

    gain = 0.6 + 0.8 * lv["activation_gain"].to_numpy()
    radius = (8.0 + 2.5 * lv["size"].to_numpy() + 4.0 * gain * _sigmoid01(act, 0.45, 0.12)) * noise(0.05)
    aspect = (1.08 + 0.55 * lv["elongation"].to_numpy() - 0.1 * act) * noise(0.05)
    brightness = (
        (600.0 + 700.0 * lv["brightness"].to_numpy()) * (1.0 - 0.3 * _sigmoid01(act, 0.5, 0.15)) * noise(0.1)
    )
    contrast = (0.12 + 0.28 * lv["texture_contrast"].to_numpy()) * (1.0 - 0.5 * _sigmoid01(act, 0.55, 0.12))
    radial = (
        0.5 * (2.0 * lv["radial"].to_numpy() - 1.0)
        + 0.9 * (0.5 - _sigmoid01(act, 0.55, 0.15))
        + rng.normal(0.0, 0.1, n)
    )
    return pd.DataFrame(
        {
            "radius": np.clip(radius, MIN_RADIUS, MAX_RADIUS),
            "aspect": np.clip(aspect, 1.0, 1.8),
            "orientation": rng.uniform(0.0, np.pi, n),
            "brightness": brightness,
            "texture_contrast": contrast * noise(0.12),
            "texture_scale": (0.8 + 1.7 * lv["texture_scale"].to_numpy()) * noise(0.1),
            "radial_bias": np.clip(radial, -0.95, 0.95),
            "irregularity": rng.uniform(0.02, 0.07, n),
        },
        index=states.index,
    )


def nucleus_extent(traits: pd.DataFrame | Mapping) -> np.ndarray | float:
    """Radius (px) of a disc guaranteed to contain the rendered nucleus and its blur."""
    major = np.asarray(traits["radius"]) * np.sqrt(np.asarray(traits["aspect"]))
    return major * (1.0 + _HARMONIC_WEIGHTS.sum() * np.asarray(traits["irregularity"])) + 2.0 * _PSF_SIGMA


def render_nucleus(
    traits: Mapping[str, float],
    *,
    offset: tuple[float, float] = (0.0, 0.0),
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one nucleus (noise-free stain signal, before blur) in a square patch.

    Parameters
    ----------
    traits
        One row of :func:`nucleus_traits` (any mapping with its keys).
    offset
        Sub-pixel position ``(dy, dx)`` in [0, 1) of the centre relative to the
        patch's central pixel.
    seed
        Seed or generator for the texture and outline (:func:`numpy.random.default_rng`).

    Returns
    -------
    signal
        ``(P, P)`` float64 stain signal in photo-electrons, 0 outside the nucleus;
        ``P = 2 * ceil(extent) + 1``, the nucleus centred on the middle pixel (+ offset).
    mask
        ``(P, P)`` bool, the true nucleus.
    """
    rng = np.random.default_rng(seed)
    half = int(np.ceil(nucleus_extent(traits)))
    coords = np.arange(-half, half + 1, dtype=float)
    y = coords[:, None] - offset[0]
    x = coords[None, :] - offset[1]

    theta = float(traits["orientation"])
    semi_major = traits["radius"] * np.sqrt(traits["aspect"])
    semi_minor = traits["radius"] / np.sqrt(traits["aspect"])
    u = (x * np.cos(theta) + y * np.sin(theta)) / semi_major
    v = (-x * np.sin(theta) + y * np.cos(theta)) / semi_minor
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u)
    amps = traits["irregularity"] * _HARMONIC_WEIGHTS
    phases = rng.uniform(0.0, 2.0 * np.pi, _HARMONICS.size)
    harmonics = np.cos(_HARMONICS[:, None, None] * phi + phases[:, None, None])
    outline = 1.0 + np.sum(amps[:, None, None] * harmonics, axis=0)
    s = rho / outline  # 0 at the centre, 1 on the outline
    mask = s <= 1.0

    # Radial chromatin profile with mean ~1 over the disc: 2 s^2 - 1 averages 0.
    profile = np.clip(1.0 + 0.8 * traits["radial_bias"] * (2.0 * s**2 - 1.0), 0.05, None)
    field = ndimage.gaussian_filter(rng.standard_normal(s.shape), traits["texture_scale"], mode="wrap")
    field /= field.std() + 1e-12
    c = traits["texture_contrast"]
    texture = np.exp(c * field - 0.5 * c**2)  # log-normal, mean 1
    # Anti-aliased edge: ramps from 0 to 1 over about one pixel across the outline.
    alpha = np.clip((1.0 - s) * traits["radius"] + 0.5, 0.0, 1.0)
    signal = traits["brightness"] * profile * texture * alpha
    return signal, mask


def place_nuclei(
    extents: np.ndarray,
    *,
    field_size: int = 256,
    max_per_field: int = 8,
    max_tries: int = 200,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> pd.DataFrame:
    """Place nuclei in consecutive fields by rejection sampling so that none touch.

    Nuclei are taken in the given order; a field is closed when it holds
    ``max_per_field`` nuclei or when ``max_tries`` random positions for the next one
    all collide, and the nucleus then opens a new field.

    Parameters
    ----------
    extents
        Bounding radius of each nucleus (:func:`nucleus_extent`).
    field_size
        Side of a square field (px).
    max_per_field
        Largest number of nuclei per field.
    max_tries
        Random positions tried per nucleus before opening a new field.
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    pandas.DataFrame
        One row per nucleus with ``field`` (0-based) and integer ``y``, ``x`` centre pixels.
    """
    if max_per_field < 1 or max_tries < 1:
        raise ValueError(f"max_per_field and max_tries must be at least 1, got {max_per_field}, {max_tries}")
    extents = np.asarray(extents, dtype=float)
    lo_needed = np.ceil(extents.max(initial=0.0)) + _BORDER_GAP
    if 2 * lo_needed + 1 > field_size:
        raise ValueError(f"field_size {field_size} is too small for nuclei of bounding radius {extents.max():.1f} px")
    rng = np.random.default_rng(seed)
    field, ys, xs = np.zeros(extents.size, int), np.zeros(extents.size, int), np.zeros(extents.size, int)
    current, placed = 0, []  # placed: (y, x, extent) in the current field
    for i, r in enumerate(extents):
        lo = int(np.ceil(r + _BORDER_GAP))
        hi = field_size - 1 - lo
        for _attempt in range(2):
            if len(placed) >= max_per_field:
                current, placed = current + 1, []
            cand = rng.integers(lo, hi + 1, size=(max_tries, 2))
            if placed:
                p = np.asarray(placed)
                dist = np.hypot(cand[:, None, 0] - p[None, :, 0], cand[:, None, 1] - p[None, :, 1])
                ok = np.all(dist > r + p[None, :, 2] + _NUCLEUS_GAP, axis=1)
            else:
                ok = np.ones(max_tries, bool)
            if ok.any():
                y, x = cand[np.argmax(ok)]
                break
            current, placed = current + 1, []  # field is full: the second attempt is in an empty field
        field[i], ys[i], xs[i] = current, y, x
        placed.append((y, x, r))
    return pd.DataFrame({"field": field, "y": ys, "x": xs})


def _illumination(field_size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative illumination: off-centre vignetting plus a linear tilt (about 0.65-1.1)."""
    coords = np.arange(field_size) / field_size - 0.5
    cy, cx = rng.uniform(-0.2, 0.2, 2)
    strength = rng.uniform(0.15, 0.3)
    gy, gx = rng.uniform(-0.08, 0.08, 2)
    # Separable sum of a y-only and an x-only term: cheap to build at full resolution.
    along_y = -strength * (coords - cy) ** 2 / 0.5 + gy * coords
    along_x = -strength * (coords - cx) ** 2 / 0.5 + gx * coords
    return 1.0 + along_y[:, None] + along_x[None, :]


def _autofluorescence(field_size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth background signal (photo-electrons): a level plus low-frequency blotches."""
    level = rng.uniform(15.0, 35.0)
    coords = 2.0 * np.pi * np.arange(field_size) / field_size
    blotches = np.zeros((field_size, field_size))
    # A few separable low-frequency waves (at most 2 cycles per field) with random phases.
    for _ in range(4):
        fy, fx = rng.uniform(0.3, 2.0, 2)
        py, px = rng.uniform(0.0, 2.0 * np.pi, 2)
        blotches += np.outer(np.cos(fy * coords + py), np.cos(fx * coords + px))
    blotches /= blotches.std() + 1e-12
    return np.clip(level + 5.0 * blotches, 0.0, None)


def render_field(
    traits: pd.DataFrame,
    positions: pd.DataFrame | np.ndarray,
    *,
    field_size: int = 256,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render a microscopy field holding the given nuclei.

    Parameters
    ----------
    traits
        Rows of :func:`nucleus_traits`, one per nucleus in this field.
    positions
        ``(k, 2)`` integer centre pixels ``(y, x)`` (or a frame with columns ``y``,
        ``x``), e.g. from :func:`place_nuclei`; nuclei must fit inside the field.
    field_size
        Side of the square field (px).
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    image
        ``(field_size, field_size)`` uint16 raw camera image (ADU).
    labels
        ``(field_size, field_size)`` uint16 true label mask, nucleus ``i`` of
        ``traits`` has label ``i + 1``, background 0.
    """
    rng = np.random.default_rng(seed)
    pos = positions[["y", "x"]].to_numpy() if isinstance(positions, pd.DataFrame) else np.asarray(positions)
    if len(pos) != len(traits):
        raise ValueError(f"got {len(traits)} nuclei but {len(pos)} positions")
    signal = np.zeros((field_size, field_size))
    labels = np.zeros((field_size, field_size), dtype=np.uint16)
    for label, ((y, x), row) in enumerate(zip(pos, traits.to_dict("records"), strict=True), start=1):
        patch, mask = render_nucleus(row, offset=tuple(rng.uniform(0.0, 1.0, 2)), seed=rng)
        half = patch.shape[0] // 2
        sl = np.s_[y - half : y + half + 1, x - half : x + half + 1]
        if y - half < 0 or x - half < 0 or y + half >= field_size or x + half >= field_size:
            raise ValueError(f"nucleus {label} at ({y}, {x}) does not fit in a {field_size} px field")
        signal[sl] += patch
        labels[sl][mask] = label
    electrons = _illumination(field_size, rng) * (
        ndimage.gaussian_filter(signal, _PSF_SIGMA) + _autofluorescence(field_size, rng)
    )
    adu = rng.poisson(electrons) + _CAMERA_OFFSET + rng.normal(0.0, _READ_NOISE, electrons.shape)
    image = np.clip(np.rint(adu), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return image, labels


@dataclass
class ImageSimulation:
    """Rendered fields with their true masks and the nucleus table.

    Attributes
    ----------
    fields
        Raw uint16 camera images, one per field.
    masks
        uint16 true label masks, aligned with ``fields``.
    nuclei
        One row per nucleus, indexed by ``cell_id``, with ``field`` (0-based), ``label``,
        ``centroid_y``, ``centroid_x`` (true centroid from the mask, pixel row/column)
        and the morphology traits of :func:`nucleus_traits`.
    """

    fields: list[np.ndarray]
    masks: list[np.ndarray]
    nuclei: pd.DataFrame


def _mask_centroids(labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Centroid (row, col) of labels 1..n_labels."""
    rows, cols = np.nonzero(labels)
    ids = labels[rows, cols]
    area = np.bincount(ids, minlength=n_labels + 1)[1:]
    cy = np.bincount(ids, weights=rows, minlength=n_labels + 1)[1:] / area
    cx = np.bincount(ids, weights=cols, minlength=n_labels + 1)[1:] / area
    return np.column_stack([cy, cx])


def simulate_images(
    states: pd.DataFrame,
    *,
    field_size: int = 256,
    nuclei_per_field: int = 8,
    seed: int | np.random.Generator | np.random.SeedSequence | None = 0,
) -> ImageSimulation:
    """Render the nuclei of ``states`` (in the given order) into microscopy fields.

    Parameters
    ----------
    states
        Output of :func:`~cellbridge.simulate.simulate_states`; pass it in the order
        the nuclei should fill the fields.
    field_size
        Side of a square field (px); at least 64.
    nuclei_per_field
        Largest number of nuclei per field.
    seed
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    ImageSimulation
    """
    if field_size < 64:
        raise ValueError(f"field_size must be at least 64 px to hold a nucleus, got {field_size}")
    if nuclei_per_field < 1:
        raise ValueError(f"nuclei_per_field must be at least 1, got {nuclei_per_field}")
    rng = np.random.default_rng(seed)
    traits = nucleus_traits(states, seed=rng)
    placement = place_nuclei(
        nucleus_extent(traits), field_size=field_size, max_per_field=nuclei_per_field, seed=rng
    )
    placement.index = traits.index
    fields, masks, rows = [], [], []
    for f, members in placement.groupby("field", sort=True):
        image, labels = render_field(traits.loc[members.index], members, field_size=field_size, seed=rng)
        centroids = _mask_centroids(labels, len(members))
        fields.append(image)
        masks.append(labels)
        rows.append(
            pd.DataFrame(
                {
                    "field": f,
                    "label": np.arange(1, len(members) + 1),
                    "centroid_y": centroids[:, 0],
                    "centroid_x": centroids[:, 1],
                },
                index=members.index,
            )
        )
    nuclei = pd.concat(rows).join(traits)
    return ImageSimulation(fields=fields, masks=masks, nuclei=nuclei)
