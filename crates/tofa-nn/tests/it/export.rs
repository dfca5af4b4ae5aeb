//! Exported subnets run equal to the supernet; checkpoints round-trip under pinned names.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{Mode, SearchSpace, StaticNet, SubnetConfig, Supernet, export_subnet};

use super::{input, max_diff, tiny};

#[test]
fn export_runs_equal_to_the_supernet() {
    let s = tiny();
    let net = Supernet::new(&s, 7).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let x = input(3, 32, 8);
    for i in 0..3 {
        let cfg = if i == 0 {
            SubnetConfig::maxnet(&s)
        } else {
            SubnetConfig::sample(&s, &mut rng)
        };
        let stats = net.recalibrate_bn(&cfg, [&input(8, 32, 9)]).unwrap();
        let out = dir.path().join(format!("n{i}"));
        export_subnet(&net, &cfg, Some(&stats), &out).unwrap();
        let st = StaticNet::load(&out).unwrap();
        assert_eq!(st.meta().source_id, cfg.id());
        let want = net.forward_t(&x, &cfg, Mode::Eval(Some(&stats))).unwrap();
        let got = st.forward(&x).unwrap();
        assert!(
            max_diff(&want, &got) < 1e-5,
            "{cfg}: {}",
            max_diff(&want, &got)
        );
    }
}

#[test]
fn save_load_round_trip_and_pinned_names() {
    let s = tiny();
    let net = Supernet::new(&s, 1).unwrap();
    let names: Vec<String> = net.tensors().into_keys().collect();
    let want_some = [
        "classifier.bias",
        "classifier.weight",
        "head.bn.running_mean",
        "head.bn.running_var",
        "head.bn.weight",
        "head.conv.weight",
        "stages.0.blocks.0.dw.bn.bias",
        "stages.0.blocks.0.dw.conv.weight",
        "stages.0.blocks.0.project.conv.weight",
        "stages.1.blocks.0.expand.conv.weight",
        "stages.1.blocks.1.se.expand.bias",
        "stages.1.blocks.1.se.reduce.weight",
        "stem.bn.running_var",
        "stem.conv.weight",
    ];
    for n in want_some {
        assert!(names.iter().any(|m| m == n), "missing {n}");
    }
    assert_eq!(names.len(), 90); // stem 5, stage0 10, stage1 2x19, stage2 2x15, head 5, classifier 2
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("stages.0.blocks.0.expand")),
        "e=1 stage has no expansion conv"
    );
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    net.save(&p).unwrap();
    let mut other = Supernet::new(&s, 2).unwrap();
    other.load(&p).unwrap();
    let x = input(2, 32, 0);
    let cfg = SubnetConfig::maxnet(&s);
    let a = net.forward_t(&x, &cfg, Mode::Eval(None)).unwrap();
    assert_eq!(
        max_diff(&a, &other.forward_t(&x, &cfg, Mode::Eval(None)).unwrap()),
        0.0
    );
    // a file for another space names the first mismatching tensor
    let mut wrong = Supernet::new(&SearchSpace::builtin("small").unwrap(), 0).unwrap();
    let e = wrong.load(&p).unwrap_err().to_string();
    assert!(e.contains("weights: tensor `"), "{e}");
}
