//! GPU memory of this process, read through NVML (the NVIDIA driver's management library),
//! for the device benchmarks on CUDA.
//!
//! candle's CUDA backend has no allocator statistics to ask (PyTorch's
//! `max_memory_allocated` has no counterpart), so the figure is the driver's: what NVML
//! reports this process holds on the GPUs (`nvmlDeviceGetComputeRunningProcesses`, summed over
//! devices), which includes the CUDA context and whatever the stream-ordered allocator keeps
//! pooled. A benchmark reads it once before loading the model (the baseline: the context
//! alone) and samples it from a thread every `interval` while the model loads and runs; the
//! metric is `peak - baseline`, as for the CPU's resident set size. A sample can miss a peak
//! shorter than the interval, so the peak is a lower bound.
//!
//! In a container whose PID namespace hides host PIDs, NVML lists this process under another
//! PID: it is then not found, and the reading falls back to the memory used on the whole
//! device(s) ([`Scope::Device`]), which counts other processes too. The scope is recorded.
//!
//! NVML is loaded at run time (`libnvidia-ml.so.1`, shipped with the driver), so this module
//! builds and its error path runs on a machine with no GPU; [`GpuMemoryProbe::open`] then says
//! why it cannot read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SelectError};

/// Whose memory a reading counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This process's, from NVML's list of compute processes.
    Process,
    /// Everything used on the devices (this process not found in NVML's list).
    Device,
}

/// GPU memory around a benchmark (bytes; see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuMemory {
    /// Before loading the model (the CUDA context alone, for [`Scope::Process`]).
    pub baseline_bytes: u64,
    /// The largest reading while the model loaded and ran.
    pub peak_bytes: u64,
    /// `peak_bytes - baseline_bytes`: the metric.
    pub peak_minus_baseline_bytes: u64,
    /// Readings taken (the sampler's and the direct ones).
    pub samples: u64,
    /// The sampler's period.
    pub interval_ms: f64,
    pub scope: Scope,
    /// The GPUs' names, as NVML gives them.
    pub gpus: Vec<String>,
}

/// An open NVML handle that reads this process's GPU memory.
pub struct GpuMemoryProbe {
    nvml: Arc<Nvml>,
    pid: u32,
}

impl std::fmt::Debug for GpuMemoryProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuMemoryProbe")
            .field("pid", &self.pid)
            .finish()
    }
}

fn nvml_err(what: &str, e: nvml_wrapper::error::NvmlError) -> SelectError {
    SelectError::Bench(format!("gpu memory: {what}: {e}"))
}

impl GpuMemoryProbe {
    /// Loads NVML; the error says why it cannot (no driver library, no device).
    pub fn open() -> Result<Self> {
        let nvml = Nvml::init().map_err(|e| {
            nvml_err(
                "cannot load NVML (libnvidia-ml.so.1, part of the NVIDIA driver)",
                e,
            )
        })?;
        Ok(GpuMemoryProbe {
            nvml: Arc::new(nvml),
            pid: std::process::id(),
        })
    }

    /// The GPUs' names.
    pub fn gpus(&self) -> Result<Vec<String>> {
        let n = self
            .nvml
            .device_count()
            .map_err(|e| nvml_err("device count", e))?;
        (0..n)
            .map(|i| {
                let d = self
                    .nvml
                    .device_by_index(i)
                    .map_err(|e| nvml_err("device", e))?;
                d.name().map_err(|e| nvml_err("device name", e))
            })
            .collect()
    }

    /// One reading: this process's memory on every GPU, or the devices' used memory when
    /// NVML does not list this process.
    pub fn read(&self) -> Result<(u64, Scope)> {
        read(&self.nvml, self.pid)
    }

    /// Starts a thread that reads every `interval` and keeps the largest reading, until
    /// [`PeakSampler::finish`].
    pub fn sample(&self, interval: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let device_scope = Arc::new(AtomicBool::new(false));
        let handle = {
            let (nvml, pid) = (Arc::clone(&self.nvml), self.pid);
            let (stop, peak, samples, device_scope) = (
                Arc::clone(&stop),
                Arc::clone(&peak),
                Arc::clone(&samples),
                Arc::clone(&device_scope),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((bytes, scope)) = read(&nvml, pid) {
                        peak.fetch_max(bytes, Ordering::Relaxed);
                        samples.fetch_add(1, Ordering::Relaxed);
                        if scope == Scope::Device {
                            device_scope.store(true, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(interval);
                }
            })
        };
        PeakSampler {
            stop,
            peak,
            samples,
            device_scope,
            handle: Some(handle),
        }
    }
}

fn read(nvml: &Nvml, pid: u32) -> Result<(u64, Scope)> {
    let n = nvml
        .device_count()
        .map_err(|e| nvml_err("device count", e))?;
    let (mut ours, mut found, mut used) = (0u64, false, 0u64);
    for i in 0..n {
        let d = nvml.device_by_index(i).map_err(|e| nvml_err("device", e))?;
        let procs = d
            .running_compute_processes()
            .map_err(|e| nvml_err("compute processes", e))?;
        for p in procs.iter().filter(|p| p.pid == pid) {
            found = true;
            if let UsedGpuMemory::Used(b) = p.used_gpu_memory {
                ours += b;
            }
        }
        used += d
            .memory_info()
            .map_err(|e| nvml_err("memory info", e))?
            .used;
    }
    Ok(match found {
        true => (ours, Scope::Process),
        false => (used, Scope::Device),
    })
}

/// A running sampler ([`GpuMemoryProbe::sample`]).
#[derive(Debug)]
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    device_scope: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl PeakSampler {
    /// Stops the thread: the largest reading, the number of readings, and whether any was of
    /// the whole device.
    pub fn finish(mut self) -> (u64, u64, bool) {
        self.stop_thread();
        (
            self.peak.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
            self.device_scope.load(Ordering::Relaxed),
        )
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without the NVIDIA driver (CI) opening fails with an error that names
    /// NVML; with one, a reading works and the sampler stops when asked.
    #[test]
    fn open_names_nvml_or_reads() {
        match GpuMemoryProbe::open() {
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("cannot load NVML (libnvidia-ml.so.1"), "{e}");
            }
            Ok(p) => {
                let (bytes, scope) = p.read().unwrap();
                assert!(scope == Scope::Device || bytes > 0);
                let s = p.sample(Duration::from_millis(1));
                std::thread::sleep(Duration::from_millis(20));
                let (_, samples, _) = s.finish();
                assert!(samples > 0);
            }
        }
    }
}
