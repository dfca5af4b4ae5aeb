//! Search spaces as data: a stem, MBConv stages with elastic choices, a head, input resolutions.
//!
//! A space is written in TOML (see `spaces/*.toml` for the built-ins) and parsed through
//! [`SearchSpaceWire`] (unknown fields rejected) into a validated [`SearchSpace`]: every choice
//! list is non-empty, free of zeros, sorted ascending and deduplicated. Validation errors name the
//! field, e.g. `stages[2].depths`.

use serde::{Deserialize, Serialize};

use crate::error::{NnError, Result, space_err};

/// Activation function of a stage, the stem or the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (EfficientNet-Lite, MobileNetV2).
    Relu6,
    /// `x * relu6(x + 3) / 6` (MobileNetV3).
    Hswish,
}

/// Zero padding of the stem and depthwise convolutions (square inputs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// `k / 2` on every side (PyTorch, timm, OFA).
    #[default]
    Symmetric,
    /// TensorFlow's `SAME`: the output has `ceil(n / s)` positions, the total padding is
    /// `max((ceil(n / s) - 1) * s + k - n, 0)` and its odd half goes after (bottom, right).
    /// Differs from `Symmetric` only for strided convolutions on even sizes; weights trained in
    /// TensorFlow (EfficientNet-Lite) need it.
    Same,
}

impl Padding {
    /// `(before, after)` padding of a `k`-wide convolution at stride `s` over `n` positions.
    pub fn pads(self, n: usize, k: usize, s: usize) -> (usize, usize) {
        match self {
            Padding::Symmetric => (k / 2, k / 2),
            Padding::Same => {
                let out = n.div_ceil(s);
                let total = ((out.max(1) - 1) * s + k).saturating_sub(n);
                (total / 2, total - total / 2)
            }
        }
    }

    fn is_symmetric(&self) -> bool {
        *self == Padding::Symmetric
    }
}

/// The stem: a plain `k x k` convolution, BN and activation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StemSpace {
    /// Output channel choices.
    pub widths: Vec<usize>,
    /// Kernel size (odd).
    pub kernel: usize,
    /// Stride (1 or 2).
    pub stride: usize,
    /// Activation after BN.
    pub act: Activation,
}

/// One stage of MBConv (inverted residual) blocks; only its first block has `stride`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StageSpace {
    /// Output channel choices.
    pub widths: Vec<usize>,
    /// Number-of-blocks choices; a subnet runs the first `d` blocks.
    pub depths: Vec<usize>,
    /// Depthwise kernel size choices (odd); one kernel for every block of the stage.
    pub kernels: Vec<usize>,
    /// Expansion ratio choices; `1` means no expansion convolution.
    pub expands: Vec<usize>,
    /// Whether blocks carry squeeze-and-excitation.
    pub se: bool,
    /// Stride of the stage's first block (1 or 2).
    pub stride: usize,
    /// Activation inside the blocks.
    pub act: Activation,
}

/// The head: a 1x1 convolution (+BN+act), global average pooling, optionally a 1x1 "feature
/// mix" layer (MobileNetV3's `MBPool`), and the classifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeadSpace {
    /// Feature width choices before the classifier.
    pub widths: Vec<usize>,
    /// `None`: conv1x1(last -> width)+BN+act, pool (EfficientNet-Lite).
    /// `Some(e)`: conv1x1(last -> last*e)+BN+act, pool, linear(last*e -> width)+act (MobileNetV3).
    pub expand: Option<usize>,
    /// Activation of the head.
    pub act: Activation,
}

/// A validated search space. Construct with [`SearchSpace::from_toml`], [`SearchSpace::builtin`]
/// or `TryFrom<SearchSpaceWire>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SearchSpaceWire")]
pub struct SearchSpace {
    /// Short name (`paper`, `lite0`, ...).
    pub name: String,
    /// Input channels (3 for RGB).
    pub in_channels: usize,
    /// Classifier outputs.
    pub num_classes: usize,
    /// Input resolution choices (square inputs).
    pub resolutions: Vec<usize>,
    /// The stem.
    pub stem: StemSpace,
    /// The stages, in order.
    pub stages: Vec<StageSpace>,
    /// The head.
    pub head: HeadSpace,
    /// OFA's kernel transformation matrices: a smaller kernel is the centre of the next larger
    /// one times a learned `k*k x k*k` matrix (identity at init), per block and kernel size,
    /// instead of the plain centre.
    pub kernel_transform: bool,
    /// BatchNorm epsilon (1e-5 as PyTorch; 1e-3 for TF-trained EfficientNet weights).
    pub bn_eps: f64,
    /// Padding convention of the strided convolutions (not written when symmetric, so older
    /// spaces serialise unchanged).
    #[serde(skip_serializing_if = "Padding::is_symmetric")]
    pub padding: Padding,
}

/// Wire form of [`StemSpace`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StemSpaceWire {
    pub widths: Vec<usize>,
    #[serde(default = "three")]
    pub kernel: usize,
    pub stride: usize,
    pub act: Activation,
}

/// Wire form of [`StageSpace`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpaceWire {
    pub widths: Vec<usize>,
    pub depths: Vec<usize>,
    pub kernels: Vec<usize>,
    pub expands: Vec<usize>,
    pub se: bool,
    pub stride: usize,
    pub act: Activation,
}

/// Wire form of [`HeadSpace`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadSpaceWire {
    pub widths: Vec<usize>,
    #[serde(default)]
    pub expand: Option<usize>,
    pub act: Activation,
}

/// Wire form of [`SearchSpace`], as read from TOML or JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpaceWire {
    pub name: String,
    #[serde(default = "three")]
    pub in_channels: usize,
    pub num_classes: usize,
    pub resolutions: Vec<usize>,
    pub stem: StemSpaceWire,
    pub stages: Vec<StageSpaceWire>,
    pub head: HeadSpaceWire,
    #[serde(default)]
    pub kernel_transform: bool,
    #[serde(default = "default_eps")]
    pub bn_eps: f64,
    #[serde(default)]
    pub padding: Padding,
}

fn default_eps() -> f64 {
    1e-5
}

fn three() -> usize {
    3
}

/// Checks a choice list and returns it sorted and deduplicated.
fn choices(field: &str, mut v: Vec<usize>) -> Result<Vec<usize>> {
    if v.is_empty() {
        return Err(space_err(field, "no choices"));
    }
    if v.contains(&0) {
        return Err(space_err(field, "zero is not a valid choice"));
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

fn kernel_ok(field: &str, k: usize) -> Result<()> {
    if k.is_multiple_of(2) {
        return Err(space_err(
            field,
            format!("kernel {k} is even; kernels must be odd"),
        ));
    }
    Ok(())
}

fn stride_ok(field: &str, s: usize) -> Result<()> {
    if s != 1 && s != 2 {
        return Err(space_err(field, format!("stride {s} is not 1 or 2")));
    }
    Ok(())
}

/// Largest depth any stage may have.
pub const MAX_DEPTH: usize = 16;

impl TryFrom<SearchSpaceWire> for SearchSpace {
    type Error = NnError;

    fn try_from(w: SearchSpaceWire) -> Result<Self> {
        if w.name.is_empty() {
            return Err(space_err("name", "empty"));
        }
        if w.in_channels == 0 {
            return Err(space_err("in_channels", "zero"));
        }
        if w.num_classes == 0 {
            return Err(space_err("num_classes", "zero"));
        }
        let resolutions = choices("resolutions", w.resolutions)?;
        let stem = StemSpace {
            widths: choices("stem.widths", w.stem.widths)?,
            kernel: w.stem.kernel,
            stride: w.stem.stride,
            act: w.stem.act,
        };
        if stem.kernel == 0 {
            return Err(space_err("stem.kernel", "zero"));
        }
        kernel_ok("stem.kernel", stem.kernel)?;
        stride_ok("stem.stride", stem.stride)?;
        if w.stages.is_empty() {
            return Err(space_err("stages", "no stages"));
        }
        let mut stages = Vec::with_capacity(w.stages.len());
        let mut total_stride = stem.stride;
        for (i, s) in w.stages.into_iter().enumerate() {
            let f = |name: &str| format!("stages[{i}].{name}");
            let kernels = choices(&f("kernels"), s.kernels)?;
            for &k in &kernels {
                kernel_ok(&f("kernels"), k)?;
            }
            let depths = choices(&f("depths"), s.depths)?;
            if let Some(&d) = depths.last()
                && d > MAX_DEPTH
            {
                return Err(space_err(
                    f("depths"),
                    format!("depth {d} is above the maximum {MAX_DEPTH}"),
                ));
            }
            stride_ok(&f("stride"), s.stride)?;
            total_stride *= s.stride;
            stages.push(StageSpace {
                widths: choices(&f("widths"), s.widths)?,
                depths,
                kernels,
                expands: choices(&f("expands"), s.expands)?,
                se: s.se,
                stride: s.stride,
                act: s.act,
            });
        }
        if resolutions[0] < total_stride {
            return Err(space_err(
                "resolutions",
                format!(
                    "resolution {} is below the total stride {total_stride}",
                    resolutions[0]
                ),
            ));
        }
        if !(w.bn_eps > 0.0 && w.bn_eps < 1.0) {
            return Err(space_err(
                "bn_eps",
                format!("{} is not in (0, 1)", w.bn_eps),
            ));
        }
        if w.head.expand == Some(0) {
            return Err(space_err("head.expand", "zero"));
        }
        let head = HeadSpace {
            widths: choices("head.widths", w.head.widths)?,
            expand: w.head.expand,
            act: w.head.act,
        };
        Ok(SearchSpace {
            name: w.name,
            in_channels: w.in_channels,
            num_classes: w.num_classes,
            resolutions,
            stem,
            stages,
            head,
            kernel_transform: w.kernel_transform,
            bn_eps: w.bn_eps,
            padding: w.padding,
        })
    }
}

const BUILTINS: [(&str, &str); 5] = [
    ("paper", include_str!("../spaces/paper.toml")),
    ("lite0", include_str!("../spaces/lite0.toml")),
    ("lite2", include_str!("../spaces/lite2.toml")),
    ("small", include_str!("../spaces/small.toml")),
    ("tiny", include_str!("../spaces/tiny.toml")),
];

impl SearchSpace {
    /// Parses and validates a space from TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let wire: SearchSpaceWire =
            toml::from_str(text).map_err(|e| NnError::SpaceParse(e.to_string()))?;
        Self::try_from(wire)
    }

    /// Writes the space as TOML (parses back to an equal space).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| NnError::SpaceParse(e.to_string()))
    }

    /// A built-in space: `paper` (Table 1 of the TOFA paper), `lite0` (maxnet =
    /// EfficientNet-Lite0), `lite2` (EfficientNet-Lite2 alone), `small` (CPU `quick`
    /// profile), `tiny` (smoke tests).
    pub fn builtin(name: &str) -> Result<Self> {
        let (_, text) = BUILTINS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| NnError::UnknownSpace(name.to_string()))?;
        Self::from_toml(text)
    }

    /// Names of the built-in spaces.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTINS.iter().map(|(n, _)| *n)
    }

    /// Same space with other input resolution choices (a profile that trains at the
    /// resolution its data and CPU afford), validated as a parsed space is.
    pub fn with_resolutions(mut self, resolutions: Vec<usize>) -> Result<Self> {
        self.resolutions = resolutions;
        Self::from_toml(&self.to_toml()?)
    }

    /// Same space with another number of classes (a new task's classifier).
    pub fn with_num_classes(mut self, num_classes: usize) -> Result<Self> {
        if num_classes == 0 {
            return Err(space_err("num_classes", "zero"));
        }
        self.num_classes = num_classes;
        Ok(self)
    }

    /// Widest channel count ever entering stage `i` (the previous stage's, or the stem's, max).
    pub fn max_in_channels(&self, stage: usize) -> usize {
        match stage {
            0 => max_of(&self.stem.widths),
            i => max_of(&self.stages[i - 1].widths),
        }
    }
}

pub(crate) fn max_of(v: &[usize]) -> usize {
    v.last().copied().unwrap_or(0)
}

/// `max(divisor, v rounded to a multiple of divisor)`, never below 90% of `v` (TF/timm
/// `make_divisible`).
pub fn make_divisible(v: usize, divisor: usize) -> usize {
    let new = ((v + divisor / 2) / divisor * divisor).max(divisor);
    if (new as f64) < 0.9 * v as f64 {
        new + divisor
    } else {
        new
    }
}

/// Squeeze-excitation hidden channels for `mid` expanded channels (OFA: `make_divisible(mid/4, 8)`).
pub fn se_channels(mid: usize) -> usize {
    make_divisible(mid / 4, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_round_trip() {
        for name in SearchSpace::builtin_names() {
            let s = SearchSpace::builtin(name).unwrap();
            assert_eq!(s.name, name);
            let back = SearchSpace::from_toml(&s.to_toml().unwrap()).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn same_padding_is_tensorflows() {
        // (n, k, s) -> (before, after): TF pads the odd remainder after
        for (n, k, s, want) in [
            (224, 3, 2, (0, 1)),
            (56, 5, 2, (1, 2)),
            (14, 5, 2, (1, 2)),
            (7, 3, 2, (1, 1)),
            (7, 5, 2, (2, 2)),
            (112, 3, 1, (1, 1)),
            (14, 5, 1, (2, 2)),
            (8, 1, 2, (0, 0)),
        ] {
            assert_eq!(Padding::Same.pads(n, k, s), want, "n{n} k{k} s{s}");
        }
        assert_eq!(Padding::Symmetric.pads(224, 3, 2), (1, 1));
        // symmetric is the default and is not written, so existing spaces serialise unchanged
        let paper = SearchSpace::builtin("paper").unwrap();
        assert_eq!(paper.padding, Padding::Symmetric);
        assert!(!paper.to_toml().unwrap().contains("padding"));
        let lite0 = SearchSpace::builtin("lite0").unwrap();
        assert_eq!(lite0.padding, Padding::Same);
        assert!(lite0.to_toml().unwrap().contains("padding = \"same\""));
    }

    #[test]
    fn paper_space_is_table_1() {
        let s = SearchSpace::builtin("paper").unwrap();
        assert_eq!(s.resolutions, [192, 224, 256, 288, 320]);
        assert_eq!(s.stem.widths, [16, 24]);
        assert_eq!(s.stem.kernel, 3);
        type Row<'a> = (&'a [usize], &'a [usize], &'a [usize], bool);
        let want: [Row; 7] = [
            (&[16, 24], &[1, 2], &[1], false),
            (&[24, 32], &[3, 4, 5], &[2, 4, 6], false),
            (&[32, 40], &[3, 4, 5, 6], &[2, 4, 6], true),
            (&[64, 72], &[3, 4, 5, 6], &[2, 4, 6], false),
            (&[112, 128], &[3, 4, 5, 6, 7, 8], &[2, 4, 6], true),
            (&[192, 216], &[3, 4, 5, 6, 7, 8], &[2, 4, 6], true),
            (&[216, 224], &[1, 2], &[2, 4, 6], true),
        ];
        assert_eq!(s.stages.len(), 7);
        for (st, (w, d, e, se)) in s.stages.iter().zip(want) {
            assert_eq!(st.widths, w);
            assert_eq!(st.depths, d);
            assert_eq!(st.kernels, [3, 5]);
            assert_eq!(st.expands, e);
            assert_eq!(st.se, se);
        }
        assert_eq!(s.head.widths, [1792, 1984]);
        assert_eq!(s.head.expand, Some(6));
    }

    #[test]
    fn lite0_maxnet_is_efficientnet_lite0() {
        let s = SearchSpace::builtin("lite0").unwrap();
        assert_eq!(s.stem.widths.last(), Some(&32));
        let want = [
            (16, 1, 3, 1, 1),
            (24, 2, 3, 6, 2),
            (40, 2, 5, 6, 2),
            (80, 3, 3, 6, 2),
            (112, 3, 5, 6, 1),
            (192, 4, 5, 6, 2),
            (320, 1, 3, 6, 1),
        ];
        for (st, (w, d, k, e, stride)) in s.stages.iter().zip(want) {
            let m = |v: &[usize]| *v.last().unwrap();
            assert_eq!(
                (m(&st.widths), m(&st.depths), m(&st.kernels), m(&st.expands)),
                (w, d, k, e)
            );
            assert_eq!(st.stride, stride);
            assert!(!st.se);
            assert_eq!(st.act, Activation::Relu6);
        }
        assert_eq!(s.head.widths, [1280]);
        assert_eq!(s.head.expand, None);
        assert_eq!(s.resolutions, [224]);
    }

    #[test]
    fn resolutions_can_be_replaced_and_are_validated() {
        let s = SearchSpace::builtin("lite0").unwrap();
        let r = s.clone().with_resolutions(vec![56, 64]).unwrap();
        assert_eq!(r.resolutions, [56, 64]);
        assert_eq!(r.stages, s.stages);
        // below the total stride (32) and unsorted choices are refused
        assert!(s.clone().with_resolutions(vec![16]).is_err());
        assert!(s.with_resolutions(vec![]).is_err());
    }

    fn tiny_with(edit: impl FnOnce(&mut toml::Table)) -> Result<SearchSpace> {
        let mut t: toml::Table = toml::from_str(include_str!("../spaces/tiny.toml")).unwrap();
        edit(&mut t);
        SearchSpace::from_toml(&toml::to_string(&t).unwrap())
    }

    fn stage0(t: &mut toml::Table) -> &mut toml::Table {
        t["stages"].as_array_mut().unwrap()[0]
            .as_table_mut()
            .unwrap()
    }

    #[test]
    fn invalid_spaces_name_the_field() {
        type Edit = Box<dyn FnOnce(&mut toml::Table)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|t| {
                    stage0(t).insert("kernels".into(), toml::Value::Array(vec![]));
                }),
                "stages[0].kernels: no choices",
            ),
            (
                Box::new(|t| {
                    stage0(t).insert(
                        "widths".into(),
                        toml::Value::Array(vec![0.into(), 8.into()]),
                    );
                }),
                "stages[0].widths: zero is not a valid choice",
            ),
            (
                Box::new(|t| {
                    stage0(t).insert("depths".into(), toml::Value::Array(vec![17.into()]));
                }),
                "stages[0].depths: depth 17 is above the maximum 16",
            ),
            (
                Box::new(|t| {
                    stage0(t).insert("kernels".into(), toml::Value::Array(vec![4.into()]));
                }),
                "stages[0].kernels: kernel 4 is even",
            ),
            (
                Box::new(|t| {
                    stage0(t).insert("stride".into(), 3.into());
                }),
                "stages[0].stride: stride 3 is not 1 or 2",
            ),
            (
                Box::new(|t| {
                    t["head"]
                        .as_table_mut()
                        .unwrap()
                        .insert("widths".into(), toml::Value::Array(vec![]));
                }),
                "head.widths: no choices",
            ),
            (
                Box::new(|t| {
                    t.insert("resolutions".into(), toml::Value::Array(vec![2.into()]));
                }),
                "resolutions: resolution 2 is below the total stride",
            ),
        ];
        for (edit, want) in cases {
            let err = tiny_with(edit).unwrap_err().to_string();
            assert!(err.contains(want), "{err} does not contain {want}");
        }
        let err = tiny_with(|t| {
            stage0(t).insert("colour".into(), "red".into());
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(
            SearchSpace::builtin("huge")
                .unwrap_err()
                .to_string()
                .contains("`huge`")
        );
    }

    #[test]
    fn choices_are_sorted_and_deduplicated() {
        let s = tiny_with(|t| {
            stage0(t).insert(
                "widths".into(),
                toml::Value::Array(vec![16.into(), 8.into(), 16.into()]),
            );
        })
        .unwrap();
        assert_eq!(s.stages[0].widths, [8, 16]);
    }

    #[test]
    fn make_divisible_matches_timm() {
        assert_eq!(make_divisible(6, 8), 8);
        assert_eq!(make_divisible(36, 8), 40);
        assert_eq!(make_divisible(144 / 4, 8), 40);
        assert_eq!(se_channels(96), 24);
    }
}
