//! The DAG bookkeeping of a run, apart from how stages are executed: which stages are
//! ready, which wait on how many dependencies, which failed, and what happened to each.
//!
//! Both executors drive it: the in-process loop of [`crate::exec::Runner::run`] and the
//! Slurm executor ([`crate::slurm`]); they differ only in how a started stage is built.

use std::collections::{BTreeMap, BTreeSet};

use crate::exec::{Outcome, StageRecord};
use crate::spec::Plan;

/// What the scheduler says of a ready stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Its dependencies are done: resolve its key and run it (or take it from the cache).
    Start(usize),
    /// A dependency failed or was skipped: it is recorded as skipped.
    Skip { stage: usize, because: String },
}

/// Ready stages, dependency counts and outcomes of one run over a selection.
#[derive(Debug)]
pub struct Scheduler<'p> {
    plan: &'p Plan,
    selection: Vec<usize>,
    waiting: BTreeMap<usize, usize>,
    users: BTreeMap<usize, Vec<usize>>,
    ready: BTreeSet<usize>,
    failed: BTreeSet<usize>,
    records: BTreeMap<usize, StageRecord>,
}

impl<'p> Scheduler<'p> {
    /// `selection` must be closed under dependencies (as [`Plan::select`] returns it).
    pub fn new(plan: &'p Plan, selection: &[usize]) -> Self {
        let selected: BTreeSet<usize> = selection.iter().copied().collect();
        let mut waiting = BTreeMap::new();
        let mut users: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &i in selection {
            let deps: Vec<usize> = plan.stages[i]
                .deps
                .iter()
                .copied()
                .filter(|d| selected.contains(d))
                .collect();
            waiting.insert(i, deps.len());
            for d in deps {
                users.entry(d).or_default().push(i);
            }
        }
        let ready = waiting
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(i, _)| *i)
            .collect();
        Scheduler {
            plan,
            selection: selection.to_vec(),
            waiting,
            users,
            ready,
            failed: BTreeSet::new(),
            records: BTreeMap::new(),
        }
    }

    /// The stages that became ready since the last call, in plan order; those with a failed
    /// dependency are recorded as skipped here (and release their users in turn).
    pub fn decisions(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Some(i) = self.ready.pop_first() {
            let s = &self.plan.stages[i];
            if let Some(bad) = s.deps.iter().find(|d| self.failed.contains(*d)) {
                let because = format!("dependency `{}` failed", self.plan.stages[*bad].id);
                self.complete(
                    i,
                    None,
                    Outcome::Skipped {
                        because: because.clone(),
                    },
                );
                out.push(Decision::Skip { stage: i, because });
            } else {
                out.push(Decision::Start(i));
            }
        }
        out
    }

    /// Records what happened to a started stage and releases the stages waiting on it.
    pub fn complete(&mut self, i: usize, key: Option<String>, outcome: Outcome) {
        if matches!(outcome, Outcome::Failed { .. } | Outcome::Skipped { .. }) {
            self.failed.insert(i);
        }
        self.records.insert(
            i,
            StageRecord {
                id: self.plan.stages[i].id.clone(),
                key,
                outcome,
            },
        );
        for &u in self.users.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
            if let Some(n) = self.waiting.get_mut(&u) {
                *n -= 1;
                if *n == 0 {
                    self.ready.insert(u);
                }
            }
        }
    }

    /// Whether every selected stage has an outcome.
    pub fn finished(&self) -> bool {
        self.records.len() == self.selection.len()
    }

    /// The records in selection order.
    pub fn into_records(mut self) -> Vec<StageRecord> {
        self.selection
            .iter()
            .filter_map(|i| self.records.remove(i))
            .collect()
    }
}
