"""The look of one synthetic person, sampled from a seed: colours, face shape, hair, clothing, background.

An Identity holds only appearance; where the person is and how they move comes from the keypoints
(iasa.synthetic.avatar draws one from the other). Sizes are fractions of body measures that the
renderer reads off the keypoints (half the temple-to-temple width of the face, the shoulder width),
so an identity looks the same at every image size and framing.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]

# Named palettes: (name, RGB). Skin tones span light to deep; hair includes a few dyed colours.
SKIN_TONES: tuple[tuple[str, RGB], ...] = (
    ("porcelain", (246, 221, 204)), ("light", (238, 200, 170)), ("beige", (228, 185, 145)),
    ("olive", (205, 160, 115)), ("tan", (190, 140, 95)), ("brown", (150, 100, 65)),
    ("dark brown", (110, 72, 45)), ("deep", (80, 52, 35)),
)  # fmt: skip
HAIR_COLOURS: tuple[tuple[str, RGB], ...] = (
    ("black", (28, 24, 24)), ("dark brown", (60, 38, 24)), ("brown", (105, 65, 35)),
    ("auburn", (140, 60, 30)), ("blond", (215, 180, 105)), ("grey", (165, 165, 165)),
    ("white", (232, 230, 225)), ("blue", (40, 80, 190)), ("pink", (225, 105, 165)),
)  # fmt: skip
HAIR_COLOUR_WEIGHTS = (0.22, 0.2, 0.15, 0.1, 0.12, 0.08, 0.04, 0.045, 0.045)
IRIS_COLOURS: tuple[RGB, ...] = ((70, 45, 30), (110, 75, 40), (60, 110, 170), (70, 125, 80), (90, 90, 95))
# Hair styles the renderer knows (iasa.synthetic.avatar draws each).
HAIR_STYLES = ("short", "fringe", "side_part", "long", "bun", "curly", "bald")
HAIR_STYLE_WEIGHTS = (0.2, 0.15, 0.15, 0.2, 0.1, 0.12, 0.08)
SLEEVES = ("short", "long")
NECKLINES = ("round", "v", "collar")
BACKGROUND_PATTERNS = ("plain", "stripes", "wall_and_floor", "window")
# Colour names for prompts: (name, hue in degrees) of saturated clothing colours.
CLOTHING_HUES = (
    ("red", 0), ("orange", 28), ("yellow", 52), ("green", 120), ("teal", 170), ("blue", 215),
    ("purple", 275), ("pink", 320),
)  # fmt: skip
MIN_CLOTHING_BACKGROUND_DISTANCE = 90.0  # RGB distance, so the body stands out from the background


@dataclass(frozen=True)
class Identity:
    """Appearance of one person. Colours are RGB uint8 triples; shape factors are relative (1 = the
    keypoints' own proportions)."""

    seed: int
    skin: RGB
    skin_name: str
    lips: RGB
    hair: RGB
    hair_name: str
    hair_style: str
    iris: RGB
    clothing: RGB
    clothing_name: str
    clothing_accent: RGB
    sleeves: str
    neckline: str
    background_top: RGB
    background_bottom: RGB
    background_pattern: str
    # Face outline: width scale of the jaw contour, taper of the chin (0 round, > 0 pointed, < 0 square),
    # and the height of the skull above the temples in half face widths.
    face_width: float
    jaw_taper: float
    cranium_height: float
    # Cartoon feature sizes: eyes and mouth are drawn this many times their landmark size about their
    # centre (openness still follows the landmarks); brow thickness in half face widths.
    eye_scale: float
    mouth_scale: float
    brow_thickness: float
    # Body width (torso, arms) relative to an average build.
    build: float

    @classmethod
    def sample(cls, seed: int) -> "Identity":
        """The identity of ``seed`` (numpy's default_rng): the same seed gives the same person."""
        rng = np.random.default_rng(seed)
        skin_name, skin = SKIN_TONES[rng.integers(len(SKIN_TONES))]
        skin = _jitter(skin, rng, 8)
        hair_name, hair = HAIR_COLOURS[rng.choice(len(HAIR_COLOURS), p=HAIR_COLOUR_WEIGHTS)]
        hair = _jitter(hair, rng, 10)
        clothing_name, hue = CLOTHING_HUES[rng.integers(len(CLOTHING_HUES))]
        clothing = _hsv((hue + rng.uniform(-8, 8)) / 360, rng.uniform(0.45, 0.85), rng.uniform(0.45, 0.9))
        accent = _hsv(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0.75, 0.98))
        while True:  # a muted background far enough from the clothing
            background_hue = rng.random()
            top = _hsv(background_hue, rng.uniform(0.05, 0.35), rng.uniform(0.55, 0.95))
            if np.linalg.norm(np.subtract(top, clothing)) >= MIN_CLOTHING_BACKGROUND_DISTANCE:
                break
        bottom = tuple(int(v) for v in np.clip(np.multiply(top, rng.uniform(0.7, 0.9)), 0, 255))
        lips = tuple(int(v) for v in np.clip(np.multiply(skin, (0.85, 0.62, 0.62)) + (20, 0, 5), 0, 255))
        return cls(
            seed=int(seed), skin=skin, skin_name=skin_name, lips=lips, hair=hair, hair_name=hair_name,
            hair_style=HAIR_STYLES[rng.choice(len(HAIR_STYLES), p=HAIR_STYLE_WEIGHTS)],
            iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))], clothing=clothing, clothing_name=clothing_name,
            clothing_accent=accent, sleeves=SLEEVES[rng.integers(len(SLEEVES))],
            neckline=NECKLINES[rng.integers(len(NECKLINES))], background_top=top, background_bottom=bottom,
            background_pattern=BACKGROUND_PATTERNS[rng.integers(len(BACKGROUND_PATTERNS))],
            face_width=float(rng.uniform(0.92, 1.12)), jaw_taper=float(rng.uniform(-0.12, 0.3)),
            cranium_height=float(rng.uniform(1.25, 1.5)), eye_scale=float(rng.uniform(1.35, 1.75)),
            mouth_scale=float(rng.uniform(1.1, 1.35)), brow_thickness=float(rng.uniform(0.09, 0.16)),
            build=float(rng.uniform(0.9, 1.15)),
        )  # fmt: skip

    def describe(self) -> str:
        """A text prompt naming what a viewer sees."""
        hair = "a bald head" if self.hair_style == "bald" else f"{self.hair_name} {self.hair_style.replace('_', ' ')} hair"
        top = "t-shirt" if self.sleeves == "short" else "long-sleeved shirt"
        return f"a cartoon person with {self.skin_name} skin and {hair}, wearing a {self.clothing_name} {top}, talking"



def _hsv(hue: float, saturation: float, value: float) -> RGB:
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _jitter(colour: RGB, rng: np.random.Generator, amount: int) -> RGB:
    return tuple(int(v) for v in np.clip(np.add(colour, rng.integers(-amount, amount + 1, 3)), 0, 255))
