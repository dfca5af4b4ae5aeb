//! The paper's own numbers, printed beside ours: Tables 3 and 4, and which of the paper's data
//! sets one of ours stands for.

use tofa_report::Cell;

/// The paper's data set a name stands for (`synth-cifar100` -> `Cifar-100`).
pub fn paper_dataset(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    [
        ("cifar100", "Cifar-100"),
        ("cifar-100", "Cifar-100"),
        ("cifar10", "Cifar-10"),
        ("cifar-10", "Cifar-10"),
        ("aircraft", "Aircraft"),
        ("car", "Car"),
        ("flower", "Flower"),
        ("pet", "Pet"),
    ]
    .into_iter()
    .find(|(k, _)| n.contains(k))
    .map(|(_, v)| v)
}

/// Table 3 of the paper: Baseline labelled, TOFA labelled, TOFA lab+unlab, Baseline lab+unlab.
pub(crate) const PAPER_T3: [(&str, [f64; 4]); 6] = [
    ("Aircraft", [65.6, 69.0, 75.2, 73.4]),
    ("Car", [66.9, 71.5, 82.4, 80.3]),
    ("Flower", [80.6, 81.7, 92.3, 89.4]),
    ("Pet", [81.8, 83.0, 87.6, 87.4]),
    ("Cifar-10", [70.4, 72.3, 83.5, 82.6]),
    ("Cifar-100", [71.0, 73.6, 79.0, 77.6]),
];

/// Table 4 of the paper: (maxnet, minnet) x (lab, fm, dist, full).
pub(crate) const PAPER_T4: [(&str, [[f64; 4]; 2]); 6] = [
    (
        "Aircraft",
        [[69.0, 71.5, 73.8, 75.2], [61.7, 65.1, 70.0, 71.2]],
    ),
    ("Car", [[71.5, 78.4, 79.9, 82.4], [63.6, 72.6, 75.5, 78.9]]),
    (
        "Flower",
        [[81.7, 92.0, 91.5, 92.3], [79.8, 90.9, 91.2, 92.0]],
    ),
    ("Pet", [[83.0, 87.1, 85.6, 87.6], [78.3, 83.5, 84.4, 86.2]]),
    (
        "Cifar-10",
        [[72.3, 82.7, 80.5, 83.5], [66.9, 76.0, 79.1, 80.9]],
    ),
    (
        "Cifar-100",
        [[73.6, 77.6, 76.9, 79.0], [67.2, 72.1, 73.1, 75.4]],
    ),
];

/// Column `i` of the paper's `table` for the data set `dataset` stands for.
pub(crate) fn paper_cell<const N: usize>(
    table: &[(&str, [f64; N])],
    dataset: &str,
    i: usize,
) -> Cell {
    paper_dataset(dataset)
        .and_then(|p| table.iter().find(|(n, _)| *n == p))
        .map_or(Cell::Missing, |(_, v)| Cell::num(v[i], 1))
}

/// The paper's Table 4 cell for `dataset`, `model` (0 maxnet, 1 minnet) and variant index `i`.
pub(crate) fn paper_t4(dataset: &str, model: usize, i: usize) -> Cell {
    paper_dataset(dataset)
        .and_then(|p| PAPER_T4.iter().find(|(n, _)| *n == p))
        .map_or(Cell::Missing, |(_, v)| Cell::num(v[model][i], 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_papers_data_sets() {
        assert_eq!(paper_dataset("synth-cifar100"), Some("Cifar-100"));
        assert_eq!(paper_dataset("cifar10"), Some("Cifar-10"));
        assert_eq!(paper_dataset("synth-cars"), Some("Car"));
        assert_eq!(paper_dataset("fashion-mnist"), None);
        assert!(
            matches!(paper_cell(&PAPER_T3, "synth-pets", 2), Cell::Num { value, .. } if value == 87.6)
        );
        assert!(matches!(paper_t4("synth-pets", 1, 3), Cell::Num { value, .. } if value == 86.2));
    }
}
