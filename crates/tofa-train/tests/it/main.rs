//! Integration tests of tofa-train: the `tiny` space on small synthetic tasks, a few
//! iterations each (fast in the dev profile). One module per topic; the helpers they share are
//! here.

mod resume;
mod schedule;
mod single;
mod tofa;

use tofa_data::synthetic::{TaskSpec, generate_task};
use tofa_data::{BatchConfig, TrainTest};
use tofa_nn::{SearchSpace, Supernet};
use tofa_train::{TrainConfig, TrainData, Variant};

/// A 4-class task, 32x32; the first 16 training images labelled, the rest unlabelled.
struct Task {
    tt: TrainTest,
    labelled: Vec<u32>,
    unlabelled: Vec<u32>,
}

fn task(train_per_class: usize, difficulty: f32) -> Task {
    let tt = generate_task(
        3,
        &TaskSpec::new("t", 4, (train_per_class, 16), difficulty, 0.0),
        (32, 32),
    )
    .unwrap();
    let n = tt.train.len() as u32;
    Task {
        tt,
        labelled: (0..16).collect(),
        unlabelled: (16..n).collect(),
    }
}

impl Task {
    fn data(&self) -> TrainData<'_> {
        TrainData {
            dataset: &self.tt.train,
            labelled: &self.labelled,
            unlabelled: &self.unlabelled,
            batch: BatchConfig::new((32, 32)),
        }
    }
}

fn space() -> SearchSpace {
    SearchSpace::builtin("tiny")
        .unwrap()
        .with_num_classes(4)
        .unwrap()
}

fn small_cfg(iterations: u64, variant: Variant) -> TrainConfig {
    TrainConfig {
        iterations,
        batch_labelled: 8,
        batch_unlabelled: 8,
        warmup_epochs: 1.0,
        // warm-up in epochs as written, not scaled to the paper's 10,000 iterations
        warmup_reference_iterations: iterations,
        variant,
        seed: 5,
        ..TrainConfig::default()
    }
}

/// Every saved tensor of `net` as bits, by name.
fn weights(net: &Supernet) -> Vec<(String, Vec<u32>)> {
    net.tensors()
        .into_iter()
        .map(|(k, t)| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            (k, v.into_iter().map(f32::to_bits).collect())
        })
        .collect()
}
