"""The toy world: procedural 32×32 images of shapes with textures and colours, and their captions.

Base world (what the pipeline is trained on): 8 shapes × 8 textures × 8 colours on 3 backgrounds,
"a red star with stripes on a gray background". Held out for LoRAs:
- 10 content concepts: a new shape with its own fixed colour, behind a trigger word
  ("a zorbo on a black background");
- 10 style concepts: a new texture with its own palette (two colours and a background), behind a
  trigger word ("a star in lumeq style").
A fusion prompt asks for both: "a zorbo in lumeq style" should be the content's shape drawn in
the style's texture and palette.

Everything is deterministic given a numpy Generator. Images are rendered at 64×64 and averaged
down to 32×32 (anti-aliased edges), float32 RGB in [0, 1], channels first.
"""
import numpy as np

SIZE = 32
SUPER = 2

SHAPES = ["circle", "square", "triangle", "star", "cross", "heart", "diamond", "ring"]
TEXTURES = ["plain", "stripes", "columns", "dots", "checks", "grid", "gradient", "waves"]
TEXTURE_WORDS = {"plain": "no pattern", "stripes": "stripes", "columns": "columns", "dots": "dots", "checks": "checks",
                 "grid": "a grid", "gradient": "a gradient", "waves": "waves"}
COLOURS = {"red": (0.9, 0.15, 0.12), "green": (0.15, 0.75, 0.2), "blue": (0.15, 0.3, 0.95), "yellow": (0.95, 0.88, 0.15),
           "purple": (0.6, 0.2, 0.8), "orange": (1.0, 0.55, 0.05), "pink": (1.0, 0.55, 0.75), "cyan": (0.1, 0.85, 0.9)}
BACKGROUNDS = {"black": (0.05, 0.05, 0.05), "gray": (0.45, 0.45, 0.45), "beige": (0.88, 0.82, 0.66)}

# Content concepts: trigger word → (new shape, fixed colour).
CONTENT = {"zorbo": ("crescent", (0.95, 0.8, 0.3)), "kelpin": ("chevron", (0.3, 0.9, 0.6)),
           "vantor": ("arrow", (0.9, 0.3, 0.5)), "pibble": ("hourglass", (0.5, 0.6, 1.0)),
           "rusko": ("house", (0.85, 0.45, 0.25)), "mendix": ("semicircle", (0.7, 0.9, 0.3)),
           "grolla": ("ell", (0.95, 0.4, 0.9)), "fennix": ("tee", (0.4, 0.8, 0.95)),
           "tarvo": ("pill", (1.0, 0.65, 0.55)), "quibo": ("keyhole", (0.75, 0.75, 0.95))}
# Style concepts: trigger word → (new texture, colour A, colour B, background).
STYLE = {"lumeq": ("zigzag", (1.0, 0.5, 0.0), (0.5, 0.0, 0.05), (0.1, 0.0, 0.0)),
         "sarvik": ("diagonal", (0.2, 0.9, 0.9), (0.0, 0.2, 0.45), (0.9, 0.85, 0.7)),
         "dobrel": ("rings", (1.0, 0.95, 0.4), (0.6, 0.1, 0.5), (0.15, 0.1, 0.3)),
         "wistan": ("bricks", (0.75, 0.3, 0.2), (0.95, 0.9, 0.85), (0.3, 0.35, 0.3)),
         "clemor": ("scales", (0.3, 0.8, 0.4), (0.05, 0.3, 0.15), (0.7, 0.8, 0.95)),
         "yostra": ("plaid", (0.85, 0.1, 0.2), (0.1, 0.2, 0.6), (0.95, 0.95, 0.9)),
         "nimbel": ("hatch", (0.95, 0.95, 0.95), (0.2, 0.2, 0.25), (0.4, 0.6, 0.8)),
         "frosk": ("rays", (1.0, 0.85, 0.1), (0.95, 0.35, 0.05), (0.2, 0.05, 0.3)),
         "quendra": ("speckles", (0.6, 0.95, 0.5), (0.25, 0.3, 0.1), (0.1, 0.12, 0.1)),
         "havlin": ("argyle", (0.8, 0.6, 1.0), (0.3, 0.1, 0.5), (0.95, 0.8, 0.85))}

ALL_SHAPES = SHAPES + [shape for shape, _ in CONTENT.values()]
ALL_TEXTURES = TEXTURES + [style[0] for style in STYLE.values()]


def _grid(cx, cy):
    n = SIZE * SUPER
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / SUPER + 0.5 / SUPER
    return x - cx, y - cy, x, y


def shape_mask(shape, cx, cy, r):
    dx, dy, _, _ = _grid(cx, cy)
    ax, ay = np.abs(dx), np.abs(dy)
    d = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    if shape == "circle":
        return d < r
    if shape == "square":
        return np.maximum(ax, ay) < 0.82 * r
    if shape == "triangle":
        return (dy < 0.75 * r) & (dy > -r + 1.9 * ax)
    if shape == "star":
        return d < r * (0.62 + 0.38 * np.cos(5 * (theta + np.pi / 2)))
    if shape == "cross":
        return ((ax < 0.3 * r) & (ay < r)) | ((ay < 0.3 * r) & (ax < r))
    if shape == "heart":
        u, v = dx / (0.85 * r), -(dy + 0.1 * r) / (0.85 * r)
        return (u * u + v * v - 1) ** 3 - u * u * v ** 3 < 0
    if shape == "diamond":
        return ax + ay < r
    if shape == "ring":
        return (d < r) & (d > 0.55 * r)
    if shape == "crescent":
        return (d < r) & (np.hypot(dx - 0.45 * r, dy + 0.25 * r) > 0.8 * r)
    if shape == "chevron":  # a thick caret; it replaced a hexagon, which the VAE blurs into a circle
        return (np.abs(dy - (-0.55 * r + 1.05 * ax)) < 0.3 * r) & (ax < 0.9 * r)
    if shape == "arrow":
        shaft = (dx > -r) & (dx < 0.1 * r) & (ay < 0.25 * r)
        head = (dx >= 0.1 * r) & (dx < r) & (ay < (r - dx) * 0.9)
        return shaft | head
    if shape == "hourglass":
        return (ay < 0.9 * r) & (ax < 0.12 * r + 0.75 * ay)
    if shape == "house":
        body = (ax < 0.7 * r) & (dy > -0.1 * r) & (dy < 0.85 * r)
        roof = (dy <= -0.1 * r) & (dy > -r) & (ax < 0.9 * (dy + r))
        return body | roof
    if shape == "semicircle":
        return (d < r) & (dy < 0.2 * r)
    if shape == "ell":
        return ((dx > -0.75 * r) & (dx < -0.3 * r) & (ay < 0.9 * r)) | ((dx > -0.75 * r) & (dx < 0.75 * r) & (dy > 0.45 * r) & (dy < 0.9 * r))
    if shape == "tee":
        return ((ax < 0.85 * r) & (dy > -0.9 * r) & (dy < -0.45 * r)) | ((ax < 0.22 * r) & (dy >= -0.45 * r) & (dy < 0.9 * r))
    if shape == "pill":
        return (ay < 0.45 * r) & ((ax < 0.55 * r) | (np.hypot(ax - 0.55 * r, dy) < 0.45 * r))
    if shape == "keyhole":
        return (np.hypot(dx, dy + 0.35 * r) < 0.5 * r) | ((dy >= -0.35 * r) & (dy < 0.9 * r) & (ax < 0.15 * r + 0.35 * (dy + 0.35 * r)))
    raise ValueError(f"unknown shape {shape}")


def texture_field(texture, cx, cy, r, rng):
    """0 → colour A, 1 → colour B (fractions blend)."""
    dx, dy, x, y = _grid(cx, cy)
    if texture == "plain":
        return np.zeros_like(x)
    if texture == "stripes":
        return (np.floor(y / 3) % 2).astype(np.float32)
    if texture == "columns":
        return (np.floor(x / 3) % 2).astype(np.float32)
    if texture == "dots":
        return (np.hypot((x % 6) - 3, (y % 6) - 3) < 1.5).astype(np.float32)
    if texture == "checks":
        return ((np.floor(x / 4) + np.floor(y / 4)) % 2).astype(np.float32)
    if texture == "grid":
        return (((x % 6) < 1.5) | ((y % 6) < 1.5)).astype(np.float32)
    if texture == "gradient":
        return np.clip((dy + r) / (2 * r), 0, 1).astype(np.float32)
    if texture == "waves":
        return (np.floor((y + 1.5 * np.sin(x * 0.8)) / 3) % 2).astype(np.float32)
    if texture == "zigzag":
        return (np.floor((y + np.abs((x % 8) - 4)) / 3) % 2).astype(np.float32)
    if texture == "diagonal":
        return (np.floor((x + y) / 4) % 2).astype(np.float32)
    if texture == "rings":
        return (np.floor(np.hypot(dx, dy) / 2.5) % 2).astype(np.float32)
    if texture == "bricks":
        row = np.floor(y / 4)
        shifted = x + 3 * (row % 2)
        return (((y % 4) < 1) | ((shifted % 6) < 1)).astype(np.float32)
    if texture == "scales":
        row = np.floor(y / 4)
        sx = (x + 2.5 * (row % 2)) % 5 - 2.5
        return (np.hypot(sx, (y % 4)) > 2.6).astype(np.float32)
    if texture == "plaid":
        return 0.5 * (((x % 8) < 3).astype(np.float32) + ((y % 8) < 3).astype(np.float32))
    if texture == "hatch":
        return ((((x + y) % 5) < 1) | (((x - y) % 5) < 1)).astype(np.float32)
    if texture == "rays":
        return (np.floor((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * 12) % 2).astype(np.float32)
    if texture == "speckles":
        n = SIZE
        cells = (rng.random((n, n)) < 0.35).astype(np.float32)
        return np.kron(cells, np.ones((SUPER, SUPER), np.float32))
    if texture == "argyle":
        return ((np.abs((x % 8) - 4) + np.abs((y % 8) - 4)) < 2.5).astype(np.float32)
    raise ValueError(f"unknown texture {texture}")


def render(shape, texture, colour_a, colour_b, background, rng, radius=(9.5, 12.5), offset=2.5):
    """One image [3, 32, 32]; the shape's size and position vary with rng."""
    r = rng.uniform(*radius)
    cx = SIZE / 2 + rng.uniform(-offset, offset)
    cy = SIZE / 2 + rng.uniform(-offset, offset)
    mask = shape_mask(shape, cx, cy, r).astype(np.float32)
    t = texture_field(texture, cx, cy, r, rng)
    a, b, bg = (np.asarray(c, np.float32)[:, None, None] for c in (colour_a, colour_b, background))
    fg = a * (1 - t) + b * t
    image = fg * mask + bg * (1 - mask)
    image = image.reshape(3, SIZE, SUPER, SIZE, SUPER).mean(axis=(2, 4))
    return np.clip(image, 0, 1).astype(np.float32)


def shade(colour):
    return tuple(0.35 * c for c in colour)


def base_sample(rng, mention_background=None):
    """(image, caption, labels) from the base world."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    image = render(shape, texture, COLOURS[colour], shade(COLOURS[colour]), BACKGROUNDS[background], rng)
    if mention_background is None:
        mention_background = rng.random() < 0.7
    caption = base_caption(colour, shape, texture, background if mention_background else None)
    return image, caption, dict(shape=shape, texture=texture)


def base_caption(colour, shape, texture, background=None):
    caption = f"a {colour} {shape} with {TEXTURE_WORDS[texture]}"
    return caption + (f" on a {background} background" if background else "")


def content_sample(trigger, rng):
    shape, colour = CONTENT[trigger]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    image = render(shape, "plain", colour, shade(colour), BACKGROUNDS[background], rng)
    return image, f"a {trigger} on a {background} background", dict(shape=shape, texture="plain")


def style_sample(trigger, rng):
    texture, a, b, background = STYLE[trigger]
    shape = SHAPES[rng.integers(len(SHAPES))]
    image = render(shape, texture, a, b, background, rng)
    return image, f"a {shape} in {trigger} style", dict(shape=shape, texture=texture)


def fusion_prompt(content, style):
    return f"a {content} in {style} style"


def fused_image(content, style, rng):
    """What a perfect fusion would draw: the content's shape in the style's texture and palette."""
    shape, _ = CONTENT[content]
    texture, a, b, background = STYLE[style]
    return render(shape, texture, a, b, background, rng)


def classifier_sample(rng):
    """(image, shape index, texture index) over all 18 shapes × 18 textures, for the scorers:
    base textures in base colours, new textures mostly in their own palettes."""
    shape_index = int(rng.integers(len(ALL_SHAPES)))
    texture_index = int(rng.integers(len(ALL_TEXTURES)))
    texture = ALL_TEXTURES[texture_index]
    if texture_index < len(TEXTURES):
        colour = COLOURS[list(COLOURS)[rng.integers(len(COLOURS))]]
        if rng.random() < 0.3:  # the content concepts' own colours too
            colour = list(CONTENT.values())[rng.integers(len(CONTENT))][1]
        a, b = colour, shade(colour)
        background = BACKGROUNDS[list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]]
    else:
        _, a, b, background = next(s for s in STYLE.values() if s[0] == texture)
        if rng.random() < 0.25:
            colour = COLOURS[list(COLOURS)[rng.integers(len(COLOURS))]]
            a, b = colour, shade(colour)
    jitter = lambda c: tuple(np.clip(np.asarray(c) + rng.normal(0, 0.05, 3), 0, 1))  # noqa: E731
    # Sizes and positions a little beyond the training images': generated shapes drift past them.
    image = render(ALL_SHAPES[shape_index], texture, jitter(a), jitter(b), jitter(background), rng, radius=(8.5, 13.5), offset=3.0)
    return image, shape_index, texture_index
