use std::collections::BTreeSet;

use tofa_data::split::make_split;
use tofa_data::{SplitManifest, SplitSpec};

use crate::toy;

fn spec(seed: u64) -> SplitSpec {
    SplitSpec {
        labelled_per_class: 3,
        validation_fraction: 0.3,
        seed,
    }
}

#[test]
fn split_is_stratified_disjoint_and_complete() {
    let ds = toy(100, 5, (2, 2));
    let s = make_split(&ds, &spec(7)).unwrap();
    let mut per_class = [0usize; 5];
    for &i in &s.labelled {
        per_class[ds.label(i as usize) as usize] += 1;
    }
    assert_eq!(per_class, [3; 5]);
    let mut val_per_class = [0usize; 5];
    for &i in &s.validation {
        val_per_class[ds.label(i as usize) as usize] += 1;
    }
    assert_eq!(val_per_class, [6; 5]); // round(0.3 * 20)
    let (l, u, v): (BTreeSet<_>, BTreeSet<_>, BTreeSet<_>) = (
        s.labelled.iter().collect(),
        s.unlabelled.iter().collect(),
        s.validation.iter().collect(),
    );
    assert!(l.is_disjoint(&u) && l.is_disjoint(&v) && u.is_disjoint(&v));
    assert_eq!(l.len() + u.len() + v.len(), 100);
}

#[test]
fn split_is_deterministic_per_seed() {
    let ds = toy(60, 3, (2, 2));
    let a = make_split(&ds, &spec(1)).unwrap();
    assert_eq!(a, make_split(&ds, &spec(1)).unwrap());
    let b = make_split(&ds, &spec(2)).unwrap();
    assert_ne!(a.labelled, b.labelled);
}

#[test]
fn too_small_class_is_named() {
    let ds = toy(10, 5, (2, 2)); // two images per class
    let err = make_split(&ds, &spec(0)).unwrap_err().to_string();
    assert!(
        err.contains("class \"0\"") && err.contains("3 labelled"),
        "{err}"
    );
}

#[test]
fn manifest_round_trip_and_tamper_detection() {
    let ds = toy(40, 4, (2, 2));
    let m = SplitManifest::new(&ds, &spec(3)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("split.json");
    m.save(&path).unwrap();
    let back = SplitManifest::load(&path).unwrap();
    assert_eq!(back, m);
    back.check_against(&ds, &path).unwrap();
    let other = toy(40, 5, (2, 2));
    assert!(
        back.check_against(&other, &path)
            .unwrap_err()
            .to_string()
            .contains("digest")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let tampered = text.replacen(
        "\"labelled\": [\n      ",
        "\"labelled\": [\n      39,\n      ",
        1,
    );
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).unwrap();
    let err = SplitManifest::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("split.json") && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn paper_labelled_counts_by_name() {
    use tofa_data::split::paper_labelled_per_class;
    assert_eq!(paper_labelled_per_class("synth-cifar100"), Some(20));
    assert_eq!(paper_labelled_per_class("synth-flowers"), Some(3));
    assert_eq!(paper_labelled_per_class("FGVC_aircraft"), Some(13));
    assert_eq!(paper_labelled_per_class("mnist"), None);
}
