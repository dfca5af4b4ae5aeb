//! Device benchmarks of exported standalone models ([`tofa_nn::export_subnet`] output).
//!
//! # Latency
//! Inference (eval-mode forward of a [`tofa_nn::StaticNet`] on a fixed seeded random input) at
//! batch 1 and batch N: `warmup` untimed runs, then `repeats` timed runs; the median
//! (average of the two middle runs for an even count) and the p90 (nearest rank) in
//! milliseconds. candle's CPU backend is synchronous, so a forward's wall time is its latency;
//! on a CUDA device each timed run ends with `Device::synchronize`, so that it counts the
//! kernels and not only their launches.
//!
//! # Memory
//! Linux only, from `/proc/self/status`: the resident set size (`VmRSS`) before the model is
//! loaded is the baseline; the peak (`VmHWM`) after loading and every run is the peak; the
//! figure used as a metric is `peak - baseline`: what loading and running the model added to
//! the process at its worst. Before measuring, the peak is reset to the current RSS by writing
//! `5` to `/proc/self/clear_refs` (`hwm_reset` records whether the kernel allowed it); without
//! the reset an in-process peak may predate the benchmark, which is one reason to measure in a
//! fresh process ([`bench_in_fresh_process`]): one model's allocations then cannot colour
//! another's. Analytic figures are reported beside it: parameter bytes (f32 weights), the
//! weight file size, and activation bytes at the largest batch (peak: largest input + output
//! of one layer; total: the sum of every layer's output, what an allocator that never reused
//! memory would hold).
//!
//! On a CUDA device the model is loaded there (portable backend) and its GPU memory is read
//! through NVML the same way, baseline before loading and peak sampled every millisecond
//! while it loads and runs ([`crate::gpu_memory`]): [`BenchResult::gpu_memory`]. The process
//! figures above are then host memory.
//!
//! # The child command line ([`device_bench_main`])
//! `MODEL_DIR [--json] [--device D] [--batch N] [--warmup W] [--repeats R] [--seed S]`: prints a
//! [`BenchResult`] as JSON on stdout with `--json`, a short summary otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tofa_nn::{SearchSpace, StaticNet, SubnetConfig};

use crate::error::{Result, SelectError};
use crate::gpu_memory::{GpuMemory, GpuMemoryProbe, Scope};

/// Options of a benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchOpts {
    /// The larger batch ("batch N"); batch 1 is always measured.
    pub batch: usize,
    /// Untimed runs before timing, per batch size.
    pub warmup: usize,
    /// Timed runs per batch size.
    pub repeats: usize,
    /// Seed of the random input.
    pub seed: u64,
}

impl Default for BenchOpts {
    fn default() -> Self {
        BenchOpts {
            batch: 8,
            warmup: 3,
            repeats: 20,
            seed: 0,
        }
    }
}

impl BenchOpts {
    /// The options as child command-line arguments.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--batch".into(),
            self.batch.to_string(),
            "--warmup".into(),
            self.warmup.to_string(),
            "--repeats".into(),
            self.repeats.to_string(),
            "--seed".into(),
            self.seed.to_string(),
        ]
    }

    fn check(&self) -> Result<()> {
        if self.batch == 0 || self.repeats == 0 {
            return Err(SelectError::Bench(
                "batch and repeats must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Latency at one batch size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub batch: usize,
    pub repeats: usize,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// `median_ms / batch`.
    pub per_image_ms: f64,
}

/// Process memory around a benchmark (bytes; see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// `VmRSS` before loading the model.
    pub baseline_rss_bytes: u64,
    /// `VmRSS` after loading it.
    pub loaded_rss_bytes: u64,
    /// `VmHWM` after loading and every run.
    pub peak_rss_bytes: u64,
    /// `peak_rss_bytes - baseline_rss_bytes`: the metric.
    pub peak_minus_baseline_bytes: u64,
    /// Whether the peak was reset to the baseline before loading.
    pub hwm_reset: bool,
    /// f32 parameter bytes of the model (analytic).
    pub param_bytes: u64,
    /// Size of `model.safetensors` (weights and BN statistics).
    pub weights_file_bytes: u64,
    /// Largest input + output of one layer at the largest batch, f32 (analytic).
    pub activation_peak_bytes: u64,
    /// Sum of every layer's output at the largest batch, f32 (analytic).
    pub activation_total_bytes: u64,
}

/// The machine a benchmark ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo` (`unknown` elsewhere).
    pub cpu_model: String,
    /// Logical CPUs available to the process.
    pub logical_cpus: usize,
    /// Threads candle's CPU kernels use (`RAYON_NUM_THREADS` or the CPU count).
    pub threads: usize,
    /// The device the model ran on: `cpu`, `cuda` or `cuda:N`.
    pub backend: String,
    /// The GPUs NVML lists, when the model ran on one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    pub avx: bool,
    /// The `gemm` crate's kernels on this CPU (`tofa_nn::runtime::gemm_kernels`): `fma`, or
    /// `avx512` in a build with the `avx512-gemm` feature.
    #[serde(default)]
    pub gemm_kernels: String,
    pub os: String,
    pub arch: String,
}

/// One benchmark of one exported model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Id of the subnet in its source space.
    pub source_id: String,
    pub source_space: String,
    pub resolution: usize,
    pub macs: u64,
    pub params: u64,
    /// Batch 1 first, then batch N (when N > 1).
    pub latency: Vec<LatencyStats>,
    pub memory: MemoryReport,
    /// GPU memory, when the model ran on a CUDA device and NVML could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<GpuMemory>,
    /// Why there is no [`BenchResult::gpu_memory`] on a CUDA device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_error: Option<String>,
    pub machine: Machine,
    /// Whether it ran in a process of its own.
    pub fresh_process: bool,
    pub opts: BenchOpts,
}

impl BenchResult {
    /// Latency at `batch`, if measured.
    pub fn at_batch(&self, batch: usize) -> Option<&LatencyStats> {
        self.latency.iter().find(|l| l.batch == batch)
    }
}

fn status_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Describes this machine.
pub fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu_model,
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        threads: candle_core::utils::get_num_threads(),
        backend: "cpu".into(),
        gpus: Vec::new(),
        avx: candle_core::utils::with_avx(),
        gemm_kernels: tofa_nn::runtime::gemm_kernels().into(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
    }
}

fn out_size(h: usize, k: usize, stride: usize) -> usize {
    (h + 2 * (k / 2) - k) / stride + 1
}

/// Analytic activation elements of one image: (largest input + output of one layer, sum of
/// every layer's output). Same traversal as [`tofa_nn::cost()`].
pub fn activation_elems(space: &SearchSpace, cfg: &SubnetConfig) -> (u64, u64) {
    let (mut peak, mut total) = (0u64, 0u64);
    let mut layer = |inp: usize, out: usize| {
        peak = peak.max((inp + out) as u64);
        total += out as u64;
    };
    let r = cfg.resolution;
    let mut h = out_size(r, space.stem.kernel, space.stem.stride);
    let mut c = cfg.stem_width;
    layer(space.in_channels * r * r, c * h * h);
    for (st, sc) in space.stages.iter().zip(&cfg.stages) {
        for j in 0..sc.depth {
            let stride = if j == 0 { st.stride } else { 1 };
            let mut mid = c;
            if sc.expand > 1 {
                mid = c * sc.expand;
                layer(c * h * h, mid * h * h);
            }
            let h2 = out_size(h, sc.kernel, stride);
            layer(mid * h * h, mid * h2 * h2);
            h = h2;
            layer(mid * h * h, sc.width * h * h);
            c = sc.width;
        }
    }
    let conv_out = space.head.expand.map_or(cfg.head_width, |e| c * e);
    layer(c * h * h, conv_out * h * h);
    if space.head.expand.is_some() {
        layer(conv_out, cfg.head_width);
    }
    layer(cfg.head_width, space.num_classes);
    (peak, total)
}

fn stats(batch: usize, mut ms: Vec<f64>) -> LatencyStats {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    let p90 = ms[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
    LatencyStats {
        batch,
        repeats: n,
        median_ms: median,
        p90_ms: p90,
        mean_ms: ms.iter().sum::<f64>() / n as f64,
        min_ms: ms[0],
        max_ms: ms[n - 1],
        per_image_ms: median / batch as f64,
    }
}

/// How often the GPU memory sampler reads.
const GPU_SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// Benchmarks the model in `model_dir` in this process on the CPU (see the module docs).
pub fn bench_in_process(model_dir: &Path, opts: &BenchOpts) -> Result<BenchResult> {
    bench_in_process_on(model_dir, opts, "cpu")
}

/// As [`bench_in_process`], on `device` (`cpu`, `cuda`, `cuda:N`).
pub fn bench_in_process_on(
    model_dir: &Path,
    opts: &BenchOpts,
    device: &str,
) -> Result<BenchResult> {
    opts.check()?;
    let dev = tofa_nn::parse_device(device)?;
    // on a GPU: NVML opened and the baseline read once the CUDA context exists (`dev`)
    let (probe, mut gpu_memory_error) = match dev.is_cpu() {
        true => (None, None),
        false => match GpuMemoryProbe::open() {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    let gpu_baseline = match probe.as_ref().map(GpuMemoryProbe::read) {
        Some(Err(e)) => {
            gpu_memory_error = Some(e.to_string());
            None
        }
        Some(Ok(r)) => Some(r),
        None => None,
    };
    let sampler = match (&probe, gpu_baseline) {
        (Some(p), Some(_)) => Some(p.sample(GPU_SAMPLE_EVERY)),
        _ => None,
    };
    let hwm_reset = reset_hwm();
    let baseline = status_kb("VmRSS").unwrap_or(0);
    let net = StaticNet::load_on(model_dir, &dev)?;
    let loaded = status_kb("VmRSS").unwrap_or(0);
    let meta = net.meta().clone();
    let space = &meta.space;
    let cfg = &meta.config;
    let cost = tofa_nn::cost(space, cfg)?;
    let r = cfg.resolution;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut batches = vec![1];
    if opts.batch > 1 {
        batches.push(opts.batch);
    }
    let mut latency = Vec::new();
    for &b in &batches {
        let n = b * space.in_channels * r * r;
        let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let x =
            Tensor::from_vec(data, (b, space.in_channels, r, r), &Device::Cpu)?.to_device(&dev)?;
        for _ in 0..opts.warmup {
            net.forward(&x)?;
        }
        dev.synchronize()?;
        let mut ms = Vec::with_capacity(opts.repeats);
        for _ in 0..opts.repeats {
            let t = Instant::now();
            let y = net.forward(&x)?;
            dev.synchronize()?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            drop(y);
        }
        latency.push(stats(b, ms));
    }
    let gpu_memory = match (probe, gpu_baseline, sampler) {
        (Some(p), Some((base, scope)), Some(s)) => {
            let last = p.read();
            let (sampled, n, device_scope) = s.finish();
            let (last_bytes, last_scope) = last.unwrap_or((0, scope));
            let peak = sampled.max(last_bytes).max(base);
            let device_wide = device_scope || scope == Scope::Device || last_scope == Scope::Device;
            Some(GpuMemory {
                baseline_bytes: base,
                peak_bytes: peak,
                peak_minus_baseline_bytes: peak - base,
                samples: n + 2,
                interval_ms: GPU_SAMPLE_EVERY.as_secs_f64() * 1e3,
                scope: if device_wide {
                    Scope::Device
                } else {
                    Scope::Process
                },
                gpus: p.gpus().unwrap_or_default(),
            })
        }
        _ => None,
    };
    let peak = status_kb("VmHWM").unwrap_or(0).max(loaded);
    let (act_peak, act_total) = activation_elems(space, cfg);
    let big = *batches.last().unwrap_or(&1) as u64;
    let weights_file_bytes = std::fs::metadata(model_dir.join("model.safetensors"))
        .map(|m| m.len())
        .unwrap_or(0);
    Ok(BenchResult {
        source_id: meta.source_id.clone(),
        source_space: meta.source_space.clone(),
        resolution: r,
        macs: cost.macs,
        params: cost.params,
        latency,
        gpu_memory_error,
        machine: Machine {
            backend: device.to_string(),
            gpus: gpu_memory
                .as_ref()
                .map(|g| g.gpus.clone())
                .unwrap_or_default(),
            ..machine()
        },
        gpu_memory,
        memory: MemoryReport {
            baseline_rss_bytes: baseline,
            loaded_rss_bytes: loaded,
            peak_rss_bytes: peak,
            peak_minus_baseline_bytes: peak.saturating_sub(baseline),
            hwm_reset,
            param_bytes: cost.params * 4,
            weights_file_bytes,
            activation_peak_bytes: act_peak * 4 * big,
            activation_total_bytes: act_total * 4 * big,
        },
        fresh_process: false,
        opts: *opts,
    })
}

/// Benchmarks the model in a fresh process: runs `exe <args_prefix...> <model_dir> --json
/// <opts...>` (a binary whose command line is [`device_bench_main`]) and parses the JSON it
/// prints as the last line of its stdout, on `device`. The child inherits the environment, so
/// `RAYON_NUM_THREADS` sets its thread count.
pub fn bench_in_fresh_process(
    exe: &Path,
    args_prefix: &[String],
    model_dir: &Path,
    opts: &BenchOpts,
    device: &str,
) -> Result<BenchResult> {
    opts.check()?;
    let out = Command::new(exe)
        .args(args_prefix)
        .arg(model_dir)
        .arg("--json")
        .args(["--device", device])
        .args(opts.to_args())
        .output()
        .map_err(|source| SelectError::Io {
            path: exe.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(SelectError::Bench(format!(
            "child `{}` on {} exited with {}: {}",
            exe.display(),
            model_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut r: BenchResult = serde_json::from_str(line).map_err(|e| {
        SelectError::Bench(format!(
            "child `{}` on {}: cannot parse its json output: {e}",
            exe.display(),
            model_dir.display()
        ))
    })?;
    r.fresh_process = true;
    Ok(r)
}

/// The child command line: `MODEL_DIR [--json] [--device D] [--batch N] [--warmup W]
/// [--repeats R] [--seed S]`, parsed by clap in `tofa-pipeline device-bench` and
/// `tofa-device-bench`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct DeviceBenchArgs {
    /// An exported model's directory (`model.json` and weights).
    pub model_dir: PathBuf,
    /// Print the result as one JSON object (what the `device_bench` stage reads).
    #[arg(long)]
    pub json: bool,
    /// Where to run it: `cpu`, `cuda` or `cuda:N` (a CUDA build, see README).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The larger batch; batch 1 is always measured.
    #[arg(long, default_value_t = BenchOpts::default().batch)]
    pub batch: usize,
    /// Untimed runs before timing, per batch size.
    #[arg(long, default_value_t = BenchOpts::default().warmup)]
    pub warmup: usize,
    /// Timed runs per batch size.
    #[arg(long, default_value_t = BenchOpts::default().repeats)]
    pub repeats: usize,
    /// Seed of the random input.
    #[arg(long, default_value_t = BenchOpts::default().seed)]
    pub seed: u64,
}

impl DeviceBenchArgs {
    pub fn opts(&self) -> BenchOpts {
        BenchOpts {
            batch: self.batch,
            warmup: self.warmup,
            repeats: self.repeats,
            seed: self.seed,
        }
    }
}

/// Runs the child command: measures the model in this process and prints the result.
pub fn device_bench_main(args: &DeviceBenchArgs) -> Result<()> {
    let mut r = bench_in_process_on(&args.model_dir, &args.opts(), &args.device)?;
    r.fresh_process = true;
    if args.json {
        let text = serde_json::to_string(&r)
            .map_err(|e| SelectError::Bench(format!("serialising the result: {e}")))?;
        println!("{text}");
    } else {
        println!(
            "model {} ({} macs, {} params)",
            r.source_id, r.macs, r.params
        );
        for l in &r.latency {
            println!(
                "batch {}: median {:.3} ms, p90 {:.3} ms over {} runs",
                l.batch, l.median_ms, l.p90_ms, l.repeats
            );
        }
        println!(
            "peak rss - baseline: {} bytes; cpu: {} ({} threads, backend {}, gemm {})",
            r.memory.peak_minus_baseline_bytes,
            r.machine.cpu_model,
            r.machine.threads,
            r.machine.backend,
            r.machine.gemm_kernels
        );
        if let Some(g) = &r.gpu_memory {
            println!(
                "gpu memory peak - baseline: {} bytes ({:?} scope, {} readings, {})",
                g.peak_minus_baseline_bytes,
                g.scope,
                g.samples,
                g.gpus.join(", ")
            );
        }
        if let Some(e) = &r.gpu_memory_error {
            println!("no gpu memory: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p90() {
        let s = stats(2, (1..=10).rev().map(f64::from).collect());
        assert_eq!(
            (s.median_ms, s.p90_ms, s.min_ms, s.max_ms),
            (5.5, 9.0, 1.0, 10.0)
        );
        assert_eq!(s.per_image_ms, 2.75);
        let one = stats(1, vec![3.0]);
        assert_eq!((one.median_ms, one.p90_ms), (3.0, 3.0));
        let three = stats(1, vec![3.0, 1.0, 2.0]);
        assert_eq!((three.median_ms, three.p90_ms), (2.0, 3.0));
    }

    #[test]
    fn activation_elems_of_tiny_minnet() {
        let s = SearchSpace::builtin("tiny").unwrap();
        let c = SubnetConfig::minnet(&s);
        let (peak, total) = activation_elems(&s, &c);
        // stem: 3x32x32 in, 8x16x16 out; stage 0 (expand 1): dw 8x16x16, project 8x16x16;
        // stage 1 expand x2: 16x16x16 is the largest intermediate
        assert_eq!(peak, (8 * 16 * 16 + 16 * 16 * 16) as u64);
        assert!(total > peak);
    }

    #[test]
    fn proc_status_is_read() {
        if cfg!(target_os = "linux") {
            assert!(status_kb("VmRSS").unwrap() > 0);
            assert!(status_kb("VmHWM").unwrap() > 0);
        }
    }
}
