//! Multiply-adds and parameters: against hand counts, counts taken while running, and the
//! built-in spaces' ranges.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tofa_nn::{SearchSpace, SubnetConfig, Supernet, cost};

use super::{input, tiny};

#[test]
fn cost_matches_hand_count_and_running_count() {
    let s = tiny();
    let min = SubnetConfig::minnet(&s);
    // hand count (multiply-adds): stem 3*8*9*16*16 = 55296, stage0 18432+16384,
    // stage1 32768+9216+256+12288, stage2 18432+3456+6144, head 12288, classifier 480
    let c = cost(&s, &min).unwrap();
    assert_eq!(c.macs, 185_440);
    assert_eq!(c.params, 3_602);
    let net = Supernet::new(&s, 0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for _ in 0..8 {
        let cfg = SubnetConfig::sample(&s, &mut rng);
        let (_, macs, params) = net.forward_counted(&input(1, 32, 0), &cfg).unwrap();
        assert_eq!(
            (macs, params),
            {
                let c = cost(&s, &cfg).unwrap();
                (c.macs, c.params)
            },
            "{cfg}"
        );
    }
    let max = cost(&s, &SubnetConfig::maxnet(&s)).unwrap();
    assert!(max.macs < 5_000_000, "tiny maxnet {} macs", max.macs);
}

#[test]
fn builtin_space_costs_are_in_their_ranges() {
    let mflops = |name: &str| {
        let s = SearchSpace::builtin(name).unwrap();
        (
            cost(&s, &SubnetConfig::minnet(&s)).unwrap().mflops(),
            cost(&s, &SubnetConfig::maxnet(&s)).unwrap().mflops(),
        )
    };
    let (min, max) = mflops("small");
    assert!((20.0..=60.0).contains(&max), "small maxnet {max}");
    assert!(
        (4.0..=8.0).contains(&(max / min)),
        "small max/min {}",
        max / min
    );
    // EfficientNet-Lite0 is ~0.4 GFLOPs, 4.65 M params
    let s = SearchSpace::builtin("lite0").unwrap();
    let c = cost(&s, &SubnetConfig::maxnet(&s)).unwrap();
    assert!((380.0..420.0).contains(&c.mflops()), "lite0 {}", c.mflops());
    assert_eq!(c.params, 4_652_008);
    let (min, max) = mflops("paper");
    // The paper bounds its space to 200..2500 MFLOPs. Table 1 as printed gives a maxnet just
    // under 2500 but a minnet of ~98 MFLOPs (192 px, every minimum), so the lower bound in the
    // text does not follow from the table; we keep the table.
    assert!((2300.0..2500.0).contains(&max), "paper maxnet {max}");
    assert!((90.0..110.0).contains(&min), "paper minnet {min}");
}
