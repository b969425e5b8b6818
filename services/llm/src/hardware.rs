//! What the machine can run: CPU, memory and NVIDIA GPUs, read from `/proc` and `nvidia-smi`,
//! and the model size that fits.

use std::process::Command;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gpu {
    pub name: String,
    pub vram_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hardware {
    pub cpu_model: String,
    pub cpu_cores: u32,
    pub ram_bytes: u64,
    pub gpus: Vec<Gpu>,
}

/// A model size class, by parameter count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SizeClass {
    B1,
    B3,
    B7,
    B13,
    B34,
    B70,
}

impl SizeClass {
    /// The largest parameter count (in billions) of models in the class.
    pub fn max_billions(self) -> f64 {
        match self {
            Self::B1 => 1.5,
            Self::B3 => 4.0,
            Self::B7 => 9.0,
            Self::B13 => 15.0,
            Self::B34 => 35.0,
            Self::B70 => 72.0,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::B1 => "1B",
            Self::B3 => "3B",
            Self::B7 => "7B",
            Self::B13 => "13B",
            Self::B34 => "34B",
            Self::B70 => "70B",
        }
    }
}

const GIB: u64 = 1024 * 1024 * 1024;

impl Hardware {
    /// Reads the machine this process runs on. Missing sources count as absent hardware.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let gpus = Command::new("nvidia-smi")
            .args(["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"])
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| parse_nvidia_smi(&String::from_utf8_lossy(&output.stdout)))
            .unwrap_or_default();
        let (cpu_model, cpu_cores) = parse_cpuinfo(&cpuinfo);
        let cpu_cores = if cpu_cores == 0 {
            std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
        } else {
            cpu_cores
        };
        Self { cpu_model, cpu_cores, ram_bytes: parse_meminfo(&meminfo), gpus }
    }

    /// The largest class that runs well: quantised (4-bit) weights need roughly 0.6 GB per
    /// billion parameters plus room for the context, on the GPU when there is one, else in RAM
    /// (where anything above 7B is too slow to be useful).
    pub fn recommended_size(&self) -> SizeClass {
        let vram = self.gpus.iter().map(|g| g.vram_bytes).max().unwrap_or(0);
        match vram {
            v if v >= 48 * GIB => SizeClass::B70,
            v if v >= 24 * GIB => SizeClass::B34,
            v if v >= 16 * GIB => SizeClass::B13,
            v if v >= 8 * GIB => SizeClass::B7,
            _ => match self.ram_bytes {
                r if r >= 16 * GIB => SizeClass::B7,
                r if r >= 8 * GIB => SizeClass::B3,
                _ => SizeClass::B1,
            },
        }
    }
}

fn parse_cpuinfo(text: &str) -> (String, u32) {
    let model = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, v)| v.trim())
        })
        .unwrap_or_default()
        .to_owned();
    let cores = text.lines().filter(|line| line.starts_with("processor")).count() as u32;
    (model, cores)
}

fn parse_meminfo(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn parse_nvidia_smi(text: &str) -> Vec<Gpu> {
    text.lines()
        .filter_map(|line| {
            let (name, mib) = line.rsplit_once(',')?;
            Some(Gpu {
                name: name.trim().to_owned(),
                vram_bytes: mib.trim().parse::<u64>().ok()? * 1024 * 1024,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_nvidia_smi_output() {
        let cpuinfo =
            "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpuinfo(cpuinfo), ("AMD EPYC 7B13".to_owned(), 2));
        assert_eq!(parse_meminfo("MemTotal:       24609404 kB\nMemFree: 1 kB\n"), 24_609_404 * 1024);
        let gpus = parse_nvidia_smi("NVIDIA H100 80GB HBM3, 81559\nNVIDIA GeForce RTX 4090, 24564\n");
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[1].vram_bytes, 24_564 * 1024 * 1024);
        assert!(parse_nvidia_smi("").is_empty());
    }

    #[test]
    fn recommends_by_vram_then_ram() {
        let gpu = |gib: u64| Hardware {
            gpus: vec![Gpu { name: "x".into(), vram_bytes: gib * GIB }],
            ..Default::default()
        };
        assert_eq!(gpu(80).recommended_size(), SizeClass::B70);
        assert_eq!(gpu(24).recommended_size(), SizeClass::B34);
        assert_eq!(gpu(16).recommended_size(), SizeClass::B13, "16 GB of VRAM runs 13B-class models");
        assert_eq!(gpu(8).recommended_size(), SizeClass::B7);
        let cpu = |gib: u64| Hardware { ram_bytes: gib * GIB, ..Default::default() };
        assert_eq!(cpu(24).recommended_size(), SizeClass::B7);
        assert_eq!(cpu(8).recommended_size(), SizeClass::B3);
        assert_eq!(cpu(4).recommended_size(), SizeClass::B1);
    }
}
