//! The tables: data sets (Table 2), TOFA against single-model baselines (Table 3), the loss
//! variants (Table 4), and what pre-training on the source buys (transfer).

use tofa_report::{Cell, Table};
use tofa_train::{PretrainMode, SingleMode, Variant};

use super::paper::{PAPER_T3, paper_cell, paper_t4};
use super::stat::{by_seed, cell, datasets, is_baseline, is_tofa, over_seeds, stat_cell};
use super::{ArtifactParams, Inputs, Made, write_table};
use crate::StageError;

/// Table 2: the sizes of each data set and its splits.
pub(crate) fn datasets_table(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut t = Table::new(
        &p.title,
        &[
            "data set",
            "classes",
            "train",
            "labelled",
            "unlabelled",
            "validation",
            "test",
            "resolution",
        ],
    );
    for r in &inp.datasets {
        let mut row = vec![Cell::text(&r.dataset)];
        row.extend(
            [
                r.classes,
                r.train,
                r.labelled,
                r.unlabelled,
                r.validation,
                r.test,
                r.resolution,
            ]
            .map(|n| cell(Some(n as f64), 0)),
        );
        t.push(row)?;
    }
    write_table(p, &t, dir, "")
}

/// Table 3: the maxnet of TOFA (labelled, full) against the same network trained alone.
pub(crate) fn table3(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut t = Table::new(
        &p.title,
        &[
            "data set",
            "Baseline labelled",
            "TOFA labelled",
            "TOFA lab+unlab",
            "Baseline lab+unlab",
            "paper: Baseline labelled",
            "paper: TOFA labelled",
            "paper: TOFA lab+unlab",
            "paper: Baseline lab+unlab",
        ],
    );
    for d in &inp.order {
        let base = |m| {
            let v = by_seed(&inp.baselines, |r| is_baseline(r, d, m).then_some(r.acc));
            stat_cell(over_seeds(&v), 1)
        };
        let tofa = |v| {
            let a = by_seed(&inp.tofa, |r| is_tofa(r, d, v).then_some(r.maxnet_acc));
            stat_cell(over_seeds(&a), 1)
        };
        let mut row = vec![
            Cell::text(d),
            base(SingleMode::Labelled),
            tofa(Variant::Lab),
            tofa(Variant::Full),
            base(SingleMode::FixMatch),
        ];
        row.extend((0..4).map(|i| paper_cell(&PAPER_T3, d, i)));
        t.push(row)?;
    }
    write_table(
        p,
        &t,
        dir,
        "Top-1 test accuracy (%) of the maxnet, mean ± standard deviation over the training \
         seeds; every model starts from the same pre-trained weights. The paper's columns are \
         its Table 3 for the data set ours stands in for.",
    )
}

/// Table 4: maxnet and minnet accuracy per loss variant of eq. (4).
pub(crate) fn table4(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut cols = vec!["data set", "model"];
    cols.extend(Variant::ALL.map(Variant::name));
    cols.extend(["paper: lab", "paper: fm", "paper: dist", "paper: full"]);
    let mut t = Table::new(&p.title, &cols);
    for d in datasets(inp.tofa.iter().map(|r| &r.dataset)) {
        for (mi, model) in ["maxnet", "minnet"].into_iter().enumerate() {
            let mut row = vec![Cell::text(&d), Cell::text(model)];
            for v in Variant::ALL {
                let acc = by_seed(&inp.tofa, |r| {
                    is_tofa(r, &d, v).then_some(if mi == 0 { r.maxnet_acc } else { r.minnet_acc })
                });
                row.push(stat_cell(over_seeds(&acc), 1));
            }
            row.extend((0..4).map(|i| paper_t4(&d, mi, i)));
            t.push(row)?;
        }
    }
    write_table(
        p,
        &t,
        dir,
        "Top-1 test accuracy (%) of the maxnet and the minnet (BN recalibrated) after TOFA \
         training with each loss of eq. (4), mean ± standard deviation over the training seeds: \
         `lab` labelled only, `fm` + FixMatch, `dist` + distillation on unlabelled data, `full` \
         all three. The paper's columns are its Table 4.",
    )
}

/// TOFA from the source task's pre-trained weights against TOFA from other starts.
pub(crate) fn transfer(
    p: &ArtifactParams,
    inp: &Inputs,
    dir: &std::path::Path,
) -> Result<Made, StageError> {
    let mut starts: Vec<String> = datasets(inp.tofa.iter().map(|r| &r.start));
    starts.sort();
    let mut cols = vec!["data set".to_string(), "variant".to_string()];
    for s in &starts {
        cols.push(format!("maxnet from `{s}`"));
        cols.push(format!("minnet from `{s}`"));
    }
    let cols: Vec<&str> = cols.iter().map(String::as_str).collect();
    let mut t = Table::new(&p.title, &cols);
    for d in datasets(inp.tofa.iter().map(|r| &r.dataset)) {
        for v in Variant::ALL {
            let mut row = vec![Cell::text(&d), Cell::text(v.name())];
            let mut all = true;
            for s in &starts {
                let r = inp.tofa.iter().find(|r| is_tofa(r, &d, v) && &r.start == s);
                all &= r.is_some();
                row.push(cell(r.map(|r| r.maxnet_acc), 1));
                row.push(cell(r.map(|r| r.minnet_acc), 1));
            }
            if all {
                t.push(row)?;
            }
        }
    }
    let mut note = String::from(
        "Top-1 test accuracy (%) after the same TOFA training, started from the weights \
         pre-trained on the source task and from our seeded random initialisation: what \
         pre-training on the source buys the targets.",
    );
    for r in inp.pretrain.iter().filter(|r| r.iterations > 0) {
        let what = match r.mode {
            Some(PretrainMode::Sandwich) => "the supernet with the sandwich rule, ",
            Some(PretrainMode::Maxnet) => "the maxnet alone, ",
            None => "",
        };
        let acc = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}%"));
        note.push_str(&format!(
            " The pre-training on the source ({what}{} iterations) reached a source test \
             accuracy of {} for the maxnet and {} for the minnet (BN recalibrated).",
            r.iterations,
            acc(r.source_acc),
            acc(r.source_min_acc)
        ));
    }
    write_table(p, &t, dir, &note)
}

#[cfg(test)]
mod tests {
    use super::super::ArtifactKind;
    use super::super::testutil::{params, tofa};
    use super::*;
    use crate::rows::PretrainRow;

    #[test]
    fn transfer_names_the_pretraining_and_its_source_accuracies() {
        let pre = |source: &str, iterations, mode, acc, min| PretrainRow {
            mode,
            source_acc: acc,
            source_min_acc: min,
            ..PretrainRow::from_scratch(source, iterations)
        };
        let mut none = tofa("synth-cars", Variant::Full, "0", 10.0, 9.0);
        none.start = "pretrain-none".into();
        let inp = Inputs {
            pretrain: vec![
                pre(
                    "source",
                    3000,
                    Some(PretrainMode::Sandwich),
                    Some(53.7),
                    Some(41.7),
                ),
                pre("source", 0, None, None, None),
            ],
            tofa: vec![tofa("synth-cars", Variant::Full, "0", 53.3, 47.3), none],
            ..Inputs::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let made = transfer(&params(ArtifactKind::Transfer), &inp, dir.path()).unwrap();
        assert!(
            made.md
                .contains("| synth-cars | full | 53.3 | 47.3 | 10.0 | 9.0 |"),
            "{}",
            made.md
        );
        assert!(
            made.md.contains(
                "(the supernet with the sandwich rule, 3000 iterations) reached a source test \
                 accuracy of 53.7% for the maxnet and 41.7% for the minnet"
            ),
            "{}",
            made.md
        );
        // the 0-iteration start trained nothing, so it gets no sentence
        assert_eq!(
            made.md.matches("reached a source").count(),
            1,
            "{}",
            made.md
        );
    }

    #[test]
    fn table4_places_each_variant_and_the_papers_numbers() {
        let inp = Inputs {
            tofa: Variant::ALL
                .iter()
                .enumerate()
                .map(|(i, &v)| tofa("synth-flowers", v, "0", 50.0 + i as f64, 40.0 + i as f64))
                .collect(),
            ..Inputs::default()
        };
        let p = params(ArtifactKind::Table4);
        let dir = tempfile::tempdir().unwrap();
        let made = table4(&p, &inp, dir.path()).unwrap();
        assert!(
            made.md.contains(
                "| synth-flowers | maxnet | 50.0 | 51.0 | 52.0 | 53.0 | 81.7 | 92.0 | 91.5 | 92.3 |"
            ),
            "{}",
            made.md
        );
        assert!(
            made.md.contains(
                "| synth-flowers | minnet | 40.0 | 41.0 | 42.0 | 43.0 | 79.8 | 90.9 | 91.2 | 92.0 |"
            ),
            "{}",
            made.md
        );
        let empty = table4(&p, &Inputs::default(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(empty.contains("no input rows"), "{empty}");
    }
}
