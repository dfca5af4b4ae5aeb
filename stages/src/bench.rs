//! `device_bench`: latency and peak memory of a palette's exported models (Figures 5-7).
//!
//! Each model is measured in a fresh process (`tofa-pipeline device-bench <dir> --json ...`,
//! the binary running this stage), so one model's allocations do not colour another's
//! peak-memory reading. The stage runs the benchmarks one after another whatever its
//! thread budget; the child uses `threads` rayon threads. On a CUDA run (`--device`, the
//! profile's `device`) the models run on that device, and the rows also carry the GPU
//! memory (NVML; `tofa_select::gpu_memory`).

use serde::{Deserialize, Serialize};
use tofa_runner::BoxError;
use tofa_runner::kind::{StageContext, StageKind};
use tofa_select::{BenchOpts, BenchResult, bench_in_fresh_process, bench_in_process_on};

use crate::rows::{LatencyRow, PaletteRow};
use crate::select::{Palette, PaletteEntry, Role};
use crate::{StageError, one_dep};

/// `device_bench` stage kind.
#[derive(Debug)]
pub struct DeviceBench;

/// Params of [`DeviceBench`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceBenchParams {
    /// Batch, warm-up runs, repeats (batch 1 is always measured too).
    #[serde(default)]
    pub opts: BenchOpts,
    /// Measure in a fresh process (true) or in this one (for tests of the glue).
    #[serde(default = "yes")]
    pub fresh_process: bool,
}

fn yes() -> bool {
    true
}

/// The executable that answers `device-bench`: `$TOFA_PIPELINE_EXE`, else this process.
fn bench_exe() -> Result<std::path::PathBuf, StageError> {
    if let Some(p) = std::env::var_os("TOFA_PIPELINE_EXE") {
        return Ok(p.into());
    }
    std::env::current_exe().map_err(|e| StageError::Io {
        path: "/proc/self/exe".into(),
        source: e,
    })
}

impl StageKind for DeviceBench {
    type Params = DeviceBenchParams;
    const NAME: &'static str = "device_bench";
    const VERSION: &'static str = "1";

    fn run(&self, p: &DeviceBenchParams, ctx: &mut StageContext) -> Result<(), BoxError> {
        let dep = one_dep::<Palette>(ctx)?;
        let entries = PaletteEntry::read(dep)?;

        let dep_dir = dep.dir.clone();
        let dataset = dep
            .rows_of::<PaletteRow>()?
            .first()
            .map_or_else(|| "?".to_string(), |r| r.dataset.clone());
        let exe = bench_exe()?;
        let mut seen = std::collections::BTreeSet::new();
        ctx.progress.set_total(entries.len() as u64, "models");
        let mut results: Vec<BenchResult> = Vec::new();
        for e in &entries {
            ctx.progress.inc(1);
            if !seen.insert(e.id.clone()) {
                continue;
            }
            ctx.progress.message(&e.id);
            let dir = dep_dir.join(&e.dir);
            let r = if p.fresh_process {
                let prefix = ["device-bench".to_string()];
                bench_in_fresh_process(&exe, &prefix, &dir, &p.opts, &ctx.device)?
            } else {
                bench_in_process_on(&dir, &p.opts, &ctx.device)?
            };
            // recorded in bench.json too; the rows then have no GPU columns
            if let Some(why) = &r.gpu_memory_error {
                ctx.progress
                    .message(&format!("{}: no gpu memory: {why}", e.id));
            }
            let model = match e.role {
                Role::Maxnet => "maxnet".to_string(),
                Role::Minnet => "minnet".to_string(),
                Role::Budget => e.id.clone(),
            };
            for l in &r.latency {
                const MIB: f64 = 1048576.0;
                ctx.emit_row(&LatencyRow {
                    dataset: dataset.clone(),
                    model: model.clone(),
                    batch: l.batch,
                    mflops: e.mflops,
                    test_acc: e.test_acc,
                    median_ms: l.median_ms,
                    p90_ms: l.p90_ms,
                    per_image_ms: l.per_image_ms,
                    peak_rss_mb: r.memory.peak_rss_bytes as f64 / MIB,
                    peak_over_baseline_mb: r.memory.peak_minus_baseline_bytes as f64 / MIB,
                    param_mb: r.memory.param_bytes as f64 / MIB,
                    activation_peak_mb: r.memory.activation_peak_bytes as f64 / MIB,
                    peak_gpu_mb: r.gpu_memory.as_ref().map(|g| g.peak_bytes as f64 / MIB),
                    peak_gpu_over_baseline_mb: r
                        .gpu_memory
                        .as_ref()
                        .map(|g| g.peak_minus_baseline_bytes as f64 / MIB),
                })?;
            }
            results.push(r);
        }
        crate::write_json(&ctx.out("bench.json"), &results)?;
        if let Some(m) = results.first().map(|r| &r.machine) {
            crate::write_json(&ctx.out("machine.json"), m)?;
        }
        Ok(())
    }
}
