//! Weak and strong augmentation on `u8` HWC images, following torchvision's definitions
//! (the uint8-tensor code paths of `torchvision.transforms.functional`).
//!
//! Weak: `RandomResizedCrop` (bilinear, no antialias) + `RandomHorizontalFlip` + `ColorJitter`.
//! Strong: weak, then `AutoAugment(AutoAugmentPolicy.IMAGENET)` (nearest interpolation, fill 0),
//! or `RandAugment` as an option. Every random draw comes from the caller's RNG.

use rand::Rng;
use rand::seq::SliceRandom;

/// One `u8` image, HWC, 1 or 3 channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Img {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<u8>,
}

impl Img {
    pub fn new(h: usize, w: usize, c: usize, data: Vec<u8>) -> Self {
        assert_eq!(
            data.len(),
            h * w * c,
            "image buffer does not match {h}x{w}x{c}"
        );
        Self { h, w, c, data }
    }

    fn map(&self, f: impl Fn(u8) -> u8) -> Self {
        Self {
            data: self.data.iter().map(|&v| f(v)).collect(),
            ..*self
        }
    }

    fn with_data(&self, data: Vec<u8>) -> Self {
        Self { data, ..*self }
    }
}

// ----- colour ops ---------------------------------------------------------------------------

/// `(ratio * a + (1 - ratio) * b).clamp(0, 255)` truncated to `u8`, as torchvision's `_blend`.
fn blend(a: u8, b: f32, ratio: f32) -> u8 {
    (ratio * f32::from(a) + (1.0 - ratio) * b).clamp(0.0, 255.0) as u8
}

/// Per-pixel grayscale `0.2989 r + 0.587 g + 0.114 b`, truncated (`rgb_to_grayscale`).
fn gray(img: &Img) -> Vec<u8> {
    if img.c == 1 {
        return img.data.clone();
    }
    img.data
        .chunks_exact(3)
        .map(|p| {
            (0.2989 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])) as u8
        })
        .collect()
}

/// `adjust_brightness`: blend with black.
pub fn adjust_brightness(img: &Img, factor: f32) -> Img {
    img.map(|v| blend(v, 0.0, factor))
}

/// `adjust_saturation` (AutoAugment's "Color"): blend with the grayscale image. Identity on
/// one-channel images.
pub fn adjust_saturation(img: &Img, factor: f32) -> Img {
    if img.c == 1 {
        return img.clone();
    }
    let g = gray(img);
    let data = img
        .data
        .iter()
        .enumerate()
        .map(|(i, &v)| blend(v, f32::from(g[i / 3]), factor))
        .collect();
    img.with_data(data)
}

/// `adjust_contrast`: blend with the mean of the grayscale image.
pub fn adjust_contrast(img: &Img, factor: f32) -> Img {
    let g = gray(img);
    let mean = g.iter().map(|&v| f64::from(v)).sum::<f64>() / g.len().max(1) as f64;
    img.map(|v| blend(v, mean as f32, factor))
}

/// `adjust_sharpness`: blend with the image smoothed by `[[1,1,1],[1,5,1],[1,1,1]] / 13`
/// (rounded; the one-pixel border keeps the original values).
pub fn adjust_sharpness(img: &Img, factor: f32) -> Img {
    let (h, w, c) = (img.h, img.w, img.c);
    if h <= 2 || w <= 2 {
        return img.clone();
    }
    let mut degenerate: Vec<f32> = img.data.iter().map(|&v| f32::from(v)).collect();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for ch in 0..c {
                let mut s = 0.0f32;
                for dy in 0..3 {
                    for dx in 0..3 {
                        let k = if dy == 1 && dx == 1 { 5.0 } else { 1.0 };
                        s += k * f32::from(img.data[((y + dy - 1) * w + x + dx - 1) * c + ch]);
                    }
                }
                degenerate[(y * w + x) * c + ch] = (s / 13.0).round_ties_even();
            }
        }
    }
    let data = img
        .data
        .iter()
        .zip(&degenerate)
        .map(|(&v, &d)| blend(v, d, factor))
        .collect();
    img.with_data(data)
}

/// Python's `x % 1.0` (`x - floor(x)`), much cheaper than `fmod`.
fn frac(x: f32) -> f32 {
    x - x.floor()
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let eqc = maxc == minc;
    let cr = maxc - minc;
    let s = cr / if eqc { 1.0 } else { maxc };
    let d = if eqc { 1.0 } else { cr };
    let (rc, gc, bc) = ((maxc - r) / d, (maxc - g) / d, (maxc - b) / d);
    let hr = if maxc == r { bc - gc } else { 0.0 };
    let hg = if maxc == g && maxc != r {
        2.0 + rc - bc
    } else {
        0.0
    };
    let hb = if maxc != g && maxc != r {
        4.0 + gc - rc
    } else {
        0.0
    };
    let h = frac((hr + hg + hb) / 6.0 + 1.0);
    (h, s, maxc)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let i = (h * 6.0).floor();
    let f = h * 6.0 - i;
    let i = (i as i32).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// `adjust_hue`: rotate the hue by `factor` (in `[-0.5, 0.5]`) turns. Identity on one channel.
pub fn adjust_hue(img: &Img, factor: f32) -> Img {
    if img.c == 1 {
        return img.clone();
    }
    let mut data = Vec::with_capacity(img.data.len());
    for p in img.data.chunks_exact(3) {
        let (h, s, v) = rgb_to_hsv(
            f32::from(p[0]) / 255.0,
            f32::from(p[1]) / 255.0,
            f32::from(p[2]) / 255.0,
        );
        let (r, g, b) = hsv_to_rgb(frac(h + factor), s, v);
        // `convert_image_dtype(float -> uint8)`: multiply by 256 - 1e-3, truncate
        data.extend([
            (r * 255.999) as u8,
            (g * 255.999) as u8,
            (b * 255.999) as u8,
        ]);
    }
    img.with_data(data)
}

/// `posterize`: keep the top `bits` bits of every value.
pub fn posterize(img: &Img, bits: u32) -> Img {
    let mask = if bits == 0 {
        0
    } else {
        0xffu8 << (8 - bits.min(8))
    };
    img.map(|v| v & mask)
}

/// `solarize`: invert every value at or above `threshold`.
pub fn solarize(img: &Img, threshold: f32) -> Img {
    img.map(|v| {
        if f32::from(v) >= threshold {
            255 - v
        } else {
            v
        }
    })
}

/// `invert`.
pub fn invert(img: &Img) -> Img {
    img.map(|v| 255 - v)
}

/// `autocontrast`: stretch each channel to span 0..=255 (constant channels unchanged).
pub fn autocontrast(img: &Img) -> Img {
    let c = img.c;
    let mut data = img.data.clone();
    for ch in 0..c {
        let vals = img.data.iter().skip(ch).step_by(c);
        let (lo, hi) = vals.fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let (min, scale) = if hi == lo {
            (0.0, 1.0)
        } else {
            (f32::from(lo), 255.0 / (f32::from(hi) - f32::from(lo)))
        };
        for v in data.iter_mut().skip(ch).step_by(c) {
            *v = ((f32::from(*v) - min) * scale).clamp(0.0, 255.0) as u8;
        }
    }
    img.with_data(data)
}

/// `equalize`: per-channel histogram equalisation with torchvision's (PIL's) lookup table.
pub fn equalize(img: &Img) -> Img {
    let c = img.c;
    let mut data = img.data.clone();
    for ch in 0..c {
        let mut hist = [0u64; 256];
        for &v in img.data.iter().skip(ch).step_by(c) {
            hist[v as usize] += 1;
        }
        let last_nonzero = hist.iter().rposition(|&n| n != 0).unwrap_or(0);
        let step = (hist.iter().sum::<u64>() - hist[last_nonzero]) / 255;
        if step == 0 {
            continue;
        }
        let mut lut = [0u8; 256];
        let mut cum = 0u64;
        for k in 0..255 {
            cum += hist[k];
            lut[k + 1] = ((cum + step / 2) / step).min(255) as u8;
        }
        for v in data.iter_mut().skip(ch).step_by(c) {
            *v = lut[*v as usize];
        }
    }
    img.with_data(data)
}

// ----- geometric ops ------------------------------------------------------------------------

/// Applies an inverse affine map (output centred coords -> input centred coords, torchvision's
/// `_get_inverse_affine_matrix` layout) with nearest sampling and zero fill, as
/// `grid_sample(mode="nearest", align_corners=False)`.
fn affine_nearest(img: &Img, m: [f32; 6]) -> Img {
    let (h, w, c) = (img.h, img.w, img.c);
    let (hf, wf) = (h as f32, w as f32);
    let mut data = vec![0u8; img.data.len()];
    for i in 0..h {
        let y = i as f32 - hf * 0.5 + 0.5;
        for j in 0..w {
            let x = j as f32 - wf * 0.5 + 0.5;
            let xi = m[0] * x + m[1] * y + m[2] + wf * 0.5 - 0.5;
            let yi = m[3] * x + m[4] * y + m[5] + hf * 0.5 - 0.5;
            let (col, row) = (xi.round_ties_even(), yi.round_ties_even());
            if col >= 0.0 && row >= 0.0 && col < wf && row < hf {
                let src = (row as usize * w + col as usize) * c;
                data[(i * w + j) * c..(i * w + j + 1) * c].copy_from_slice(&img.data[src..src + c]);
            }
        }
    }
    img.with_data(data)
}

/// torchvision's `_get_inverse_affine_matrix(center, angle, translate, scale=1, shear)`.
fn inverse_affine(
    center: (f32, f32),
    angle: f32,
    translate: (f32, f32),
    shear: (f32, f32),
) -> [f32; 6] {
    let rot = angle.to_radians();
    let (sx, sy) = (shear.0.to_radians(), shear.1.to_radians());
    let (cx, cy) = center;
    let (tx, ty) = translate;
    let a = (rot - sy).cos() / sy.cos();
    let b = -(rot - sy).cos() * sx.tan() / sy.cos() - rot.sin();
    let c = (rot - sy).sin() / sy.cos();
    let d = -(rot - sy).sin() * sx.tan() / sy.cos() + rot.cos();
    let mut m = [d, -b, 0.0, -c, a, 0.0];
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty);
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty);
    m[2] += cx;
    m[5] += cy;
    m
}

/// `rotate(img, degrees)`: counter-clockwise about the centre, same size, zero fill.
pub fn rotate(img: &Img, degrees: f32) -> Img {
    affine_nearest(
        img,
        inverse_affine((0.0, 0.0), -degrees, (0.0, 0.0), (0.0, 0.0)),
    )
}

/// AutoAugment's ShearX: `affine(shear=[degrees(atan(m)), 0], center=[0, 0])`, i.e. the pixel
/// at `(row, col)` comes from `(row, col + m * (row + 0.5))`.
pub fn shear_x(img: &Img, magnitude: f32) -> Img {
    let center = (-(img.w as f32) * 0.5, -(img.h as f32) * 0.5);
    affine_nearest(
        img,
        inverse_affine(
            center,
            0.0,
            (0.0, 0.0),
            (magnitude.atan().to_degrees(), 0.0),
        ),
    )
}

/// AutoAugment's ShearY: the pixel at `(row, col)` comes from `(row + m * (col + 0.5), col)`.
pub fn shear_y(img: &Img, magnitude: f32) -> Img {
    let center = (-(img.w as f32) * 0.5, -(img.h as f32) * 0.5);
    affine_nearest(
        img,
        inverse_affine(
            center,
            0.0,
            (0.0, 0.0),
            (0.0, magnitude.atan().to_degrees()),
        ),
    )
}

/// AutoAugment's TranslateX: shift right by `int(pixels)` (truncated toward zero).
pub fn translate_x(img: &Img, pixels: f32) -> Img {
    affine_nearest(
        img,
        inverse_affine((0.0, 0.0), 0.0, (pixels.trunc(), 0.0), (0.0, 0.0)),
    )
}

/// AutoAugment's TranslateY: shift down by `int(pixels)`.
pub fn translate_y(img: &Img, pixels: f32) -> Img {
    affine_nearest(
        img,
        inverse_affine((0.0, 0.0), 0.0, (0.0, pixels.trunc()), (0.0, 0.0)),
    )
}

/// `hflip`.
pub fn hflip(img: &Img) -> Img {
    let (w, c) = (img.w, img.c);
    let mut data = Vec::with_capacity(img.data.len());
    for row in img.data.chunks_exact(w * c) {
        for x in (0..w).rev() {
            data.extend_from_slice(&row[x * c..(x + 1) * c]);
        }
    }
    img.with_data(data)
}

/// Bilinear resize of the crop `(top, left, h, w)` to `(oh, ow)`, half-pixel centres
/// (`interpolate(mode="bilinear", align_corners=False)` without antialiasing).
pub fn resized_crop(
    img: &Img,
    (top, left, ch, cw): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Img {
    let c = img.c;
    let mut data = Vec::with_capacity(oh * ow * c);
    let (sy, sx) = (ch as f32 / oh as f32, cw as f32 / ow as f32);
    let cols: Vec<(usize, usize, f32)> = (0..ow)
        .map(|j| {
            let x = ((j as f32 + 0.5) * sx - 0.5).clamp(0.0, (cw - 1) as f32);
            let x0 = x.floor() as usize;
            (left + x0, left + (x0 + 1).min(cw - 1), x - x0 as f32)
        })
        .collect();
    for i in 0..oh {
        let y = ((i as f32 + 0.5) * sy - 0.5).clamp(0.0, (ch - 1) as f32);
        let y0 = y.floor() as usize;
        let (r0, r1, fy) = (top + y0, top + (y0 + 1).min(ch - 1), y - y0 as f32);
        for &(c0, c1, fx) in &cols {
            for k in 0..c {
                let p = |r: usize, cc: usize| f32::from(img.data[(r * img.w + cc) * c + k]);
                let top_v = p(r0, c0) * (1.0 - fx) + p(r0, c1) * fx;
                let bot_v = p(r1, c0) * (1.0 - fx) + p(r1, c1) * fx;
                data.push((top_v * (1.0 - fy) + bot_v * fy).round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    Img::new(oh, ow, c, data)
}

// ----- AutoAugment / RandAugment ------------------------------------------------------------

/// The operations of torchvision's AutoAugment and RandAugment search spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AugOp {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
    Invert,
}

impl AugOp {
    /// The magnitude of bin `bin` out of `num_bins` and whether its sign is random
    /// (torchvision's `_augmentation_space` for an `h x w` image).
    pub fn magnitude(self, bin: usize, num_bins: usize, (h, w): (usize, usize)) -> (f32, bool) {
        let lin = |hi: f32| hi * bin as f32 / (num_bins - 1).max(1) as f32;
        match self {
            Self::ShearX | Self::ShearY => (lin(0.3), true),
            Self::TranslateX => (lin(150.0 / 331.0 * w as f32), true),
            Self::TranslateY => (lin(150.0 / 331.0 * h as f32), true),
            Self::Rotate => (lin(30.0), true),
            Self::Brightness | Self::Color | Self::Contrast | Self::Sharpness => (lin(0.9), true),
            Self::Posterize => {
                let r = (bin as f32 / ((num_bins - 1) as f32 / 4.0)).round_ties_even();
                (8.0 - r, false)
            }
            Self::Solarize => (255.0 - lin(255.0), false),
            Self::Identity | Self::AutoContrast | Self::Equalize | Self::Invert => (0.0, false),
        }
    }

    /// torchvision's `_apply_op(img, op, magnitude)`.
    pub fn apply(self, img: &Img, magnitude: f32) -> Img {
        match self {
            Self::Identity => img.clone(),
            Self::ShearX => shear_x(img, magnitude),
            Self::ShearY => shear_y(img, magnitude),
            Self::TranslateX => translate_x(img, magnitude),
            Self::TranslateY => translate_y(img, magnitude),
            Self::Rotate => rotate(img, magnitude),
            Self::Brightness => adjust_brightness(img, 1.0 + magnitude),
            Self::Color => adjust_saturation(img, 1.0 + magnitude),
            Self::Contrast => adjust_contrast(img, 1.0 + magnitude),
            Self::Sharpness => adjust_sharpness(img, 1.0 + magnitude),
            Self::Posterize => posterize(img, magnitude as u32),
            Self::Solarize => solarize(img, magnitude),
            Self::AutoContrast => autocontrast(img),
            Self::Equalize => equalize(img),
            Self::Invert => invert(img),
        }
    }
}

type SubPolicy = [(AugOp, f32, Option<usize>); 2];

/// torchvision's `AutoAugmentPolicy.IMAGENET`: 25 sub-policies of (op, probability, bin).
pub const IMAGENET_POLICY: [SubPolicy; 25] = {
    use AugOp::*;
    [
        [(Posterize, 0.4, Some(8)), (Rotate, 0.6, Some(9))],
        [(Solarize, 0.6, Some(5)), (AutoContrast, 0.6, None)],
        [(Equalize, 0.8, None), (Equalize, 0.6, None)],
        [(Posterize, 0.6, Some(7)), (Posterize, 0.6, Some(6))],
        [(Equalize, 0.4, None), (Solarize, 0.2, Some(4))],
        [(Equalize, 0.4, None), (Rotate, 0.8, Some(8))],
        [(Solarize, 0.6, Some(3)), (Equalize, 0.6, None)],
        [(Posterize, 0.8, Some(5)), (Equalize, 1.0, None)],
        [(Rotate, 0.2, Some(3)), (Solarize, 0.6, Some(8))],
        [(Equalize, 0.6, None), (Posterize, 0.4, Some(6))],
        [(Rotate, 0.8, Some(8)), (Color, 0.4, Some(0))],
        [(Rotate, 0.4, Some(9)), (Equalize, 0.6, None)],
        [(Equalize, 0.0, None), (Equalize, 0.8, None)],
        [(Invert, 0.6, None), (Equalize, 1.0, None)],
        [(Color, 0.6, Some(4)), (Contrast, 1.0, Some(8))],
        [(Rotate, 0.8, Some(8)), (Color, 1.0, Some(2))],
        [(Color, 0.8, Some(8)), (Solarize, 0.8, Some(7))],
        [(Sharpness, 0.4, Some(7)), (Invert, 0.6, None)],
        [(ShearX, 0.6, Some(5)), (Equalize, 1.0, None)],
        [(Color, 0.4, Some(0)), (Equalize, 0.6, None)],
        [(Equalize, 0.4, None), (Solarize, 0.2, Some(4))],
        [(Solarize, 0.6, Some(5)), (AutoContrast, 0.6, None)],
        [(Invert, 0.6, None), (Equalize, 1.0, None)],
        [(Color, 0.6, Some(4)), (Contrast, 1.0, Some(8))],
        [(Equalize, 0.8, None), (Equalize, 0.6, None)],
    ]
};

/// RandAugment's op list, in torchvision's order.
pub const RANDAUGMENT_OPS: [AugOp; 14] = {
    use AugOp::*;
    [
        Identity,
        ShearX,
        ShearY,
        TranslateX,
        TranslateY,
        Rotate,
        Brightness,
        Color,
        Contrast,
        Sharpness,
        Posterize,
        Solarize,
        AutoContrast,
        Equalize,
    ]
};

/// `AutoAugment(policy=IMAGENET)`: one random sub-policy, each op applied with its probability,
/// signed magnitudes negated with probability 1/2.
pub fn auto_augment_imagenet(img: &Img, rng: &mut impl Rng) -> Img {
    let policy = &IMAGENET_POLICY[rng.random_range(0..IMAGENET_POLICY.len())];
    let probs: [f32; 2] = [rng.random(), rng.random()];
    let signs: [bool; 2] = [rng.random(), rng.random()];
    let mut out = img.clone();
    for (i, &(op, p, bin)) in policy.iter().enumerate() {
        if probs[i] <= p {
            let (mut m, signed) = bin.map_or((0.0, false), |b| op.magnitude(b, 10, (out.h, out.w)));
            if signed && !signs[i] {
                m = -m;
            }
            out = op.apply(&out, m);
        }
    }
    out
}

/// `RandAugment(num_ops, magnitude, num_magnitude_bins)`.
pub fn rand_augment(
    img: &Img,
    num_ops: usize,
    magnitude: usize,
    num_bins: usize,
    rng: &mut impl Rng,
) -> Img {
    let mut out = img.clone();
    for _ in 0..num_ops {
        let op = RANDAUGMENT_OPS[rng.random_range(0..RANDAUGMENT_OPS.len())];
        let (mut m, signed) = op.magnitude(magnitude, num_bins, (out.h, out.w));
        if signed && rng.random::<bool>() {
            m = -m;
        }
        out = op.apply(&out, m);
    }
    out
}

// ----- pipelines ----------------------------------------------------------------------------

/// The weak augmentation's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeakAug {
    /// RandomResizedCrop area fraction range. torchvision's default is `(0.08, 1.0)`; ours is
    /// milder because 32x32 images lose their object under an 8% crop.
    pub scale: (f32, f32),
    /// RandomResizedCrop aspect-ratio range.
    pub ratio: (f32, f32),
    /// Horizontal flip probability.
    pub flip_p: f32,
    /// ColorJitter strengths (factors drawn from `[max(0, 1 - x), 1 + x]`, hue from `[-x, x]`).
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl Default for WeakAug {
    fn default() -> Self {
        Self {
            scale: (0.35, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            hue: 0.1,
        }
    }
}

/// What the strong view adds on top of the weak one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StrongAug {
    /// torchvision's AutoAugment with the ImageNet policy (the paper's choice).
    #[default]
    AutoAugmentImageNet,
    /// torchvision's RandAugment.
    RandAugment {
        num_ops: usize,
        magnitude: usize,
        num_bins: usize,
    },
}

/// torchvision's `RandomResizedCrop.get_params`: `(top, left, h, w)`.
pub fn random_resized_crop_params(
    (h, w): (usize, usize),
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut impl Rng,
) -> (usize, usize, usize, usize) {
    let area = (h * w) as f32;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return (top, left, ch, cw);
        }
    }
    let in_ratio = w as f32 / h as f32;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, ((w as f32 / ratio.0).round() as usize).clamp(1, h))
    } else if in_ratio > ratio.1 {
        (((h as f32 * ratio.1).round() as usize).clamp(1, w), h)
    } else {
        (w, h)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

/// `ColorJitter` with factors drawn in torchvision's way, applied in a random order.
pub fn color_jitter(img: &Img, aug: &WeakAug, rng: &mut impl Rng) -> Img {
    let factor = |x: f32, rng: &mut dyn rand::RngCore| {
        if x > 0.0 {
            Some(rng.random_range((1.0 - x).max(0.0)..=1.0 + x))
        } else {
            None
        }
    };
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let b = factor(aug.brightness, rng);
    let c = factor(aug.contrast, rng);
    let s = factor(aug.saturation, rng);
    let hue = (aug.hue > 0.0).then(|| rng.random_range(-aug.hue..=aug.hue));
    let mut out = img.clone();
    for k in order {
        out = match (k, b, c, s, hue) {
            (0, Some(f), ..) => adjust_brightness(&out, f),
            (1, _, Some(f), ..) => adjust_contrast(&out, f),
            (2, _, _, Some(f), _) => adjust_saturation(&out, f),
            (3, .., Some(f)) => adjust_hue(&out, f),
            _ => out,
        };
    }
    out
}

/// The weak view at `out` size: random resized crop, flip, colour jitter.
pub fn weak_view(img: &Img, out: (usize, usize), aug: &WeakAug, rng: &mut impl Rng) -> Img {
    let crop = random_resized_crop_params((img.h, img.w), aug.scale, aug.ratio, rng);
    let mut v = resized_crop(img, crop, out);
    if rng.random::<f32>() < aug.flip_p {
        v = hflip(&v);
    }
    color_jitter(&v, aug, rng)
}

/// The strong view: a weak view, then AutoAugment (or RandAugment).
pub fn strong_view(
    img: &Img,
    out: (usize, usize),
    aug: &WeakAug,
    strong: StrongAug,
    rng: &mut impl Rng,
) -> Img {
    let v = weak_view(img, out, aug, rng);
    match strong {
        StrongAug::AutoAugmentImageNet => auto_augment_imagenet(&v, rng),
        StrongAug::RandAugment {
            num_ops,
            magnitude,
            num_bins,
        } => rand_augment(&v, num_ops, magnitude, num_bins, rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Img {
        let data = (0..h * w)
            .flat_map(|i| [(i * 7 % 256) as u8, (i * 3 % 256) as u8, (i % 256) as u8])
            .collect();
        Img::new(h, w, 3, data)
    }

    fn gray_img(h: usize, w: usize, vals: &[u8]) -> Img {
        Img::new(h, w, 1, vals.to_vec())
    }

    #[test]
    fn posterize_solarize_invert_by_definition() {
        let img = gray_img(1, 4, &[0, 100, 128, 255]);
        assert_eq!(posterize(&img, 4).data, vec![0, 96, 128, 240]);
        assert_eq!(solarize(&img, 128.0).data, vec![0, 100, 127, 0]);
        assert_eq!(invert(&img).data, vec![255, 155, 127, 0]);
    }

    #[test]
    fn autocontrast_stretches_and_equalize_flattens() {
        let img = gray_img(1, 4, &[50, 60, 70, 150]);
        assert_eq!(autocontrast(&img).data, vec![0, 25, 51, 255]);
        let flat = gray_img(1, 3, &[9, 9, 9]);
        assert_eq!(autocontrast(&flat).data, flat.data);
        // 256 distinct values, one each: step = 255/255 = 1, lut[k] = k (identity).
        let all = gray_img(16, 16, &(0..=255u8).collect::<Vec<_>>());
        assert_eq!(equalize(&all).data, all.data);
        // two values, equal counts: step = 2/255 = 0 -> unchanged
        let two = gray_img(1, 4, &[10, 10, 200, 200]);
        assert_eq!(equalize(&two).data, two.data);
        // a skewed histogram: 300 pixels of 0 and 300 of 100 -> step = 300/255 = 1,
        // lut[100] = (300 + 0) / 1 clamped to 255.
        let mut v = vec![0u8; 300];
        v.extend(vec![100u8; 300]);
        let out = equalize(&gray_img(20, 30, &v));
        assert_eq!((out.data[0], out.data[599]), (0, 255));
    }

    #[test]
    fn colour_ops_by_definition() {
        let img = Img::new(1, 2, 3, vec![100, 50, 0, 200, 150, 100]);
        assert_eq!(
            adjust_brightness(&img, 1.5).data,
            vec![150, 75, 0, 255, 225, 150]
        );
        assert_eq!(adjust_brightness(&img, 1.0).data, img.data);
        // gray = 0.2989*100+0.587*50 = 59.24 -> 59; factor 0 gives the grayscale image
        assert_eq!(&adjust_saturation(&img, 0.0).data[..3], &[59, 59, 59]);
        // contrast 0 gives the mean of the grayscale (59 and 159 -> 109)
        assert_eq!(adjust_contrast(&img, 0.0).data, vec![109; 6]);
        // hue by half a turn maps pure red to cyan
        let red = Img::new(1, 1, 3, vec![255, 0, 0]);
        assert_eq!(adjust_hue(&red, 0.5).data, vec![0, 255, 255]);
        assert_eq!(adjust_hue(&red, 0.0).data, red.data);
        // a zero shift round-trips through HSV (convert_image_dtype's 255.999 keeps 200 at 200)
        let px = Img::new(1, 2, 3, vec![200, 100, 50, 13, 180, 77]);
        assert_eq!(adjust_hue(&px, 0.0).data, px.data);
    }

    #[test]
    fn sharpness_keeps_border_and_blends_interior() {
        let mut v = vec![0u8; 9];
        v[4] = 130;
        let img = gray_img(3, 3, &v);
        // smoothed centre = 5 * 130 / 13 = 50; factor 0 returns the smoothed image
        let out = adjust_sharpness(&img, 0.0);
        assert_eq!(out.data[4], 50);
        assert_eq!(out.data[0], 0);
        // factor 2: 2 * 130 - 50 = 210
        assert_eq!(adjust_sharpness(&img, 2.0).data[4], 210);
    }

    #[test]
    fn geometric_ops_by_definition() {
        let img = gray_img(2, 3, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(translate_x(&img, 1.9).data, vec![0, 1, 2, 0, 4, 5]);
        assert_eq!(translate_y(&img, -1.0).data, vec![4, 5, 6, 0, 0, 0]);
        assert_eq!(hflip(&img).data, vec![3, 2, 1, 6, 5, 4]);
        // rotate by 90 degrees counter-clockwise on a square image
        let sq = gray_img(2, 2, &[1, 2, 3, 4]);
        assert_eq!(rotate(&sq, 90.0).data, vec![2, 4, 1, 3]);
        assert_eq!(rotate(&sq, 0.0).data, sq.data);
        // shear x by 0.6: row 0 samples col + 0.3, row 1 samples col + 0.9
        let s = gray_img(2, 4, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(shear_x(&s, 0.6).data, vec![1, 2, 3, 4, 6, 7, 8, 0]);
        // shear y by 0.6: column 0 samples row + 0.3, column 1 row + 0.9
        assert_eq!(shear_y(&sq, 0.6).data, vec![1, 4, 3, 0]);
        assert_eq!(shear_y(&s, 0.0).data, s.data);
    }

    #[test]
    fn magnitudes_match_torchvision_bins() {
        assert_eq!(AugOp::Posterize.magnitude(8, 10, (32, 32)).0, 4.0);
        assert_eq!(AugOp::Posterize.magnitude(5, 10, (32, 32)).0, 6.0);
        assert_eq!(AugOp::Solarize.magnitude(9, 10, (32, 32)).0, 0.0);
        assert!((AugOp::Rotate.magnitude(9, 10, (32, 32)).0 - 30.0).abs() < 1e-6);
        assert!((AugOp::ShearX.magnitude(5, 10, (32, 32)).0 - 0.3 * 5.0 / 9.0).abs() < 1e-6);
        assert!((AugOp::TranslateX.magnitude(9, 10, (10, 331)).0 - 150.0).abs() < 1e-3);
    }

    #[test]
    fn op_dispatch_matches_the_definitions() {
        let img = ramp(6, 5);
        assert_eq!(AugOp::Color.apply(&img, 0.5), adjust_saturation(&img, 1.5));
        assert_eq!(
            AugOp::Contrast.apply(&img, -0.3),
            adjust_contrast(&img, 0.7)
        );
        assert_eq!(
            AugOp::Brightness.apply(&img, 0.2),
            adjust_brightness(&img, 1.2)
        );
        assert_eq!(
            AugOp::Sharpness.apply(&img, 0.9),
            adjust_sharpness(&img, 1.9)
        );
        assert_eq!(AugOp::Posterize.apply(&img, 5.0), posterize(&img, 5));
        assert_eq!(AugOp::Solarize.apply(&img, 100.0), solarize(&img, 100.0));
        assert_eq!(AugOp::Rotate.apply(&img, -12.0), rotate(&img, -12.0));
        assert_eq!(AugOp::ShearX.apply(&img, 0.2), shear_x(&img, 0.2));
        assert_eq!(AugOp::Identity.apply(&img, 3.0), img);
        // every op of the ImageNet policy keeps shape and changes a generic image somewhere
        // (big enough for equalize's histogram step to be nonzero)
        // and not spanning 0..=255, so autocontrast has something to stretch
        let img = ramp(20, 20).map(|v| (30 + u16::from(v) * 3 / 4) as u8);
        for sub in IMAGENET_POLICY {
            for (op, _, bin) in sub {
                let (m, _) = bin.map_or((0.0, false), |b| op.magnitude(b, 10, (img.h, img.w)));
                let out = op.apply(&img, m);
                assert_eq!((out.h, out.w, out.c), (img.h, img.w, img.c));
                if m != 0.0 || bin.is_none() {
                    assert_ne!(out, img, "{op:?} at {m} left the image unchanged");
                }
            }
        }
    }

    #[test]
    fn views_have_the_output_size_and_are_deterministic() {
        use rand::SeedableRng;
        let img = ramp(20, 24);
        let aug = WeakAug::default();
        let run = |seed| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            strong_view(
                &img,
                (16, 16),
                &aug,
                StrongAug::AutoAugmentImageNet,
                &mut rng,
            )
        };
        let a = run(1);
        assert_eq!((a.h, a.w, a.c, a.data.len()), (16, 16, 3, 768));
        assert_eq!(a, run(1));
        assert_ne!(a, run(2));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let r = strong_view(
            &img,
            (8, 8),
            &aug,
            StrongAug::RandAugment {
                num_ops: 2,
                magnitude: 9,
                num_bins: 31,
            },
            &mut rng,
        );
        assert_eq!(r.data.len(), 8 * 8 * 3);
    }
}
