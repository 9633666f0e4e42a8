//! What the machine says about taking more work: on battery power, a GPU
//! running hot, its CPU busy with other work; and what each GPU reads, for
//! the provider's heartbeats. Read from Linux's sysfs and
//! procfs under a root (`/` on a real machine, a directory a test writes),
//! and on a real machine NVIDIA's GPUs through NVML where it loads,
//! so each rule is tested against the very files it reads; where a file is
//! missing (another OS, a desktop without a battery) the reading is
//! `None`/`Unknown` and no rule pauses on it.
//!
//! The provider's loop asks [`Policy::verdict`] before each lease and its
//! heartbeats report [`CpuTimes::free_cores_since`].

use agora_wire::api::DeviceTelemetry;
use std::path::{Path, PathBuf};

/// Where the machine's readings come from.
#[derive(Clone, Debug)]
pub struct Machine {
    root: PathBuf,
    /// Whether NVIDIA's devices are read through NVML (this machine's, not
    /// a test's root).
    nvml: bool,
}

/// What powers the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    /// A mains supply is online.
    Mains,
    /// A battery discharges and no mains supply is online.
    Battery,
    /// No power supply is described (a desktop, a VM, another OS).
    Unknown,
}

/// NVML, loaded once per process (`None` where `libnvidia-ml` does not
/// load: no NVIDIA driver).
fn nvml() -> Option<&'static nvml_wrapper::Nvml> {
    static NVML: std::sync::OnceLock<Option<nvml_wrapper::Nvml>> = std::sync::OnceLock::new();
    NVML.get_or_init(|| nvml_wrapper::Nvml::init().ok())
        .as_ref()
}

/// Each NVIDIA GPU's readings through NVML: busy share, memory used,
/// temperature and power, each where the device gives it; none without
/// NVML.
fn nvml_devices() -> Vec<DeviceTelemetry> {
    use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
    let Some(nvml) = nvml() else {
        return Vec::new();
    };
    let count = nvml.device_count().unwrap_or(0);
    let setting = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    (0..count)
        .filter_map(|i| nvml.device_by_index(i).ok().map(|d| (i, d)))
        .filter(|(i, d)| cuda_visible(*i, d.uuid().ok().as_deref(), setting.as_deref()))
        .map(|(_, device)| DeviceTelemetry {
            name: agora_wire::limits::gpu_text(
                &device.name().unwrap_or_else(|_| "NVIDIA GPU".into()),
            ),
            utilization_percent: device.utilization_rates().ok().map(|u| f64::from(u.gpu)),
            memory_used_bytes: device.memory_info().ok().map(|m| m.used),
            celsius: device
                .temperature(TemperatureSensor::Gpu)
                .ok()
                .map(f64::from),
            watts: device
                .power_usage()
                .ok()
                .map(|milliwatts| f64::from(milliwatts) / 1000.0),
        })
        .collect()
}

/// Whether `CUDA_VISIBLE_DEVICES` (`setting`; unset: every device) leaves
/// this host the NVML device `index` of `uuid`: another tenant's GPU on a
/// shared machine is neither this host's to report nor a reason to pause.
/// An entry names an index (NVML's order: a machine that reorders CUDA's
/// must name UUIDs) or a UUID (`GPU-…`, or its first characters); as CUDA
/// does, the list ends at the first entry that names no device. A MIG
/// instance (`MIG-…`) cannot be traced to its GPU here: every device is
/// reported then.
fn cuda_visible(index: u32, uuid: Option<&str>, setting: Option<&str>) -> bool {
    let Some(setting) = setting else {
        return true;
    };
    let entries: Vec<&str> = setting.split(',').map(str::trim).collect();
    if entries.iter().any(|e| e.starts_with("MIG-")) {
        return true;
    }
    for entry in entries {
        let names_index = entry.parse::<u32>().ok();
        if names_index.is_none() && !entry.starts_with("GPU-") {
            return false;
        }
        if names_index == Some(index)
            || (entry.starts_with("GPU-") && uuid.is_some_and(|u| u.starts_with(entry)))
        {
            return true;
        }
    }
    false
}

/// GPU drivers whose hwmon sensors are GPU temperatures.
const GPU_HWMON_DRIVERS: [&str; 5] = ["amdgpu", "radeon", "nouveau", "i915", "xe"];

impl Machine {
    /// This machine.
    pub fn system() -> Machine {
        Machine {
            root: "/".into(),
            nvml: true,
        }
    }

    /// A machine whose `sys` and `proc` are under `root` (NVML unread).
    pub fn under(root: impl Into<PathBuf>) -> Machine {
        Machine {
            root: root.into(),
            nvml: false,
        }
    }

    fn read(&self, path: &Path) -> Option<String> {
        std::fs::read_to_string(self.root.join(path))
            .ok()
            .map(|text| text.trim().to_string())
    }

    /// The entries of the directory `path` under the root, sorted.
    fn entries(&self, path: &str) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(self.root.join(path)) else {
            return Vec::new();
        };
        let mut entries: Vec<PathBuf> = dir
            .filter_map(|entry| entry.ok())
            .map(|entry| Path::new(path).join(entry.file_name()))
            .collect();
        entries.sort();
        entries
    }

    /// What powers the machine (`/sys/class/power_supply`).
    pub fn power(&self) -> Power {
        let (mut mains_online, mut discharging) = (false, false);
        for supply in self.entries("sys/class/power_supply") {
            match self.read(&supply.join("type")).as_deref() {
                Some("Mains") | Some("USB") => {
                    mains_online |= self.read(&supply.join("online")).as_deref() == Some("1");
                }
                Some("Battery") => {
                    discharging |=
                        self.read(&supply.join("status")).as_deref() == Some("Discharging");
                }
                _ => {}
            }
        }
        match (mains_online, discharging) {
            (true, _) => Power::Mains,
            (false, true) => Power::Battery,
            (false, false) => Power::Unknown,
        }
    }

    /// The hottest GPU sensor in degrees Celsius (NVML's where it loads,
    /// and `/sys/class/hwmon`, the sensors of GPU drivers only); None when
    /// no GPU reports one.
    pub fn gpu_celsius(&self) -> Option<f64> {
        let mut hottest: Option<f64> = if self.nvml {
            nvml_devices()
                .iter()
                .filter_map(|d| d.celsius)
                .reduce(f64::max)
        } else {
            None
        };
        for sensor in self.entries("sys/class/hwmon") {
            let driver = self.read(&sensor.join("name"));
            if !driver.is_some_and(|d| GPU_HWMON_DRIVERS.contains(&d.as_str())) {
                continue;
            }
            for input in self.entries(&sensor.to_string_lossy()) {
                let name = input.file_name().map(|n| n.to_string_lossy().into_owned());
                if !name.is_some_and(|n| n.starts_with("temp") && n.ends_with("_input")) {
                    continue;
                }
                // Millidegrees.
                if let Some(milli) = self.read(&input).and_then(|t| t.parse::<i64>().ok()) {
                    let celsius = milli as f64 / 1000.0;
                    hottest = Some(hottest.map_or(celsius, |h| h.max(celsius)));
                }
            }
        }
        hottest
    }

    /// Each GPU's readings: NVIDIA's through NVML where its library loads
    /// (its proprietary driver gives none through sysfs), then each card of
    /// `/sys/class/drm/cardN/device` (the busy share and VRAM used that
    /// amdgpu gives, and the temperature and power of its hwmon sensors),
    /// for GPU drivers only; none on other systems.
    pub fn gpu_devices(&self) -> Vec<DeviceTelemetry> {
        let mut devices = if self.nvml {
            nvml_devices()
        } else {
            Vec::new()
        };
        for card in self.entries("sys/class/drm") {
            let Some(name) = card.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            // `card0`, not its connectors (`card0-DP-1`).
            if !name
                .strip_prefix("card")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                continue;
            }
            let device = card.join("device");
            let driver = self.read(&device.join("uevent")).and_then(|uevent| {
                uevent
                    .lines()
                    .find_map(|l| l.strip_prefix("DRIVER=").map(str::to_string))
            });
            let Some(driver) = driver.filter(|d| GPU_HWMON_DRIVERS.contains(&d.as_str())) else {
                continue;
            };
            let number = |path: &Path| self.read(path).and_then(|t| t.parse::<f64>().ok());
            let hwmon = self
                .entries(&device.join("hwmon").to_string_lossy())
                .into_iter()
                .next();
            let sensor = |file: &str| hwmon.as_ref().and_then(|h| number(&h.join(file)));
            devices.push(DeviceTelemetry {
                name: format!("{name} {driver}"),
                utilization_percent: number(&device.join("gpu_busy_percent")),
                memory_used_bytes: number(&device.join("mem_info_vram_used")).map(|b| b as u64),
                celsius: sensor("temp1_input").map(|milli| milli / 1000.0),
                watts: sensor("power1_average").map(|micro| micro / 1_000_000.0),
            });
        }
        devices
    }

    /// The CPU time counters now (`/proc/stat`); None where there are none.
    pub fn cpu_times(&self) -> Option<CpuTimes> {
        let stat = self.read(Path::new("proc/stat"))?;
        let mut lines = stat.lines();
        let total: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let cpus = lines
            .filter(|line| {
                line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
            })
            .count();
        // user nice system idle iowait irq softirq steal [guest guest_nice],
        // the guests already counted in user and nice.
        let (idle, iowait) = (*total.get(3)?, total.get(4).copied().unwrap_or(0));
        let all: u64 = total.iter().take(8).sum();
        Some(CpuTimes {
            idle: idle + iowait,
            all,
            cpus,
        })
    }
}

/// CPU time counters at one moment, in the kernel's ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    idle: u64,
    all: u64,
    cpus: usize,
}

impl CpuTimes {
    /// Cores left idle between `earlier` and this reading (the idle share
    /// of the time passed, times the cores); None when no time passed.
    pub fn free_cores_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let passed = self.all.checked_sub(earlier.all).filter(|&t| t > 0)?;
        let idle = self.idle.saturating_sub(earlier.idle).min(passed);
        Some(idle as f64 / passed as f64 * self.cpus as f64)
    }
}

/// When a provider takes no new work (the `[policy]` of `agora host`'s
/// config file).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Not while on battery power.
    pub pause_on_battery: bool,
    /// Not while a GPU is at or above this many degrees Celsius.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gpu_celsius: Option<f64>,
    /// Only while at least this many cores are otherwise idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_cores: Option<f64>,
}

/// What the machine reads now, for [`Policy::verdict`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Readings {
    pub power: Power,
    pub gpu_celsius: Option<f64>,
    pub free_cores: Option<f64>,
}

/// Whether to take more work.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Take,
    /// Not now, and why (for the host's log and status).
    Pause(String),
}

impl Policy {
    /// Take work, or pause and why. A reading the machine does not give
    /// never pauses.
    pub fn verdict(&self, now: &Readings) -> Verdict {
        if self.pause_on_battery && now.power == Power::Battery {
            return Verdict::Pause("on battery power".into());
        }
        if let (Some(max), Some(celsius)) = (self.max_gpu_celsius, now.gpu_celsius)
            && celsius >= max
        {
            return Verdict::Pause(format!(
                "a GPU is at {celsius:.0} °C (the limit is {max:.0} °C)"
            ));
        }
        if let (Some(min), Some(free)) = (self.min_free_cores, now.free_cores)
            && free < min
        {
            return Verdict::Pause(format!(
                "the machine is busy: {free:.1} cores idle (at least {min:.1} asked)"
            ));
        }
        Verdict::Take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{text}\n")).unwrap();
    }

    #[test]
    fn each_gpu_card_reports_what_its_driver_gives() {
        let root = tempfile::tempdir().unwrap();
        let machine = Machine::under(root.path());
        assert!(machine.gpu_devices().is_empty(), "nothing described");
        let card = "sys/class/drm/card1/device";
        write(
            root.path(),
            &format!("{card}/uevent"),
            "DRIVER=amdgpu\nPCI_ID=1002:744C",
        );
        write(root.path(), &format!("{card}/gpu_busy_percent"), "37");
        write(
            root.path(),
            &format!("{card}/mem_info_vram_used"),
            "2147483648",
        );
        write(
            root.path(),
            &format!("{card}/hwmon/hwmon4/temp1_input"),
            "61000",
        );
        write(
            root.path(),
            &format!("{card}/hwmon/hwmon4/power1_average"),
            "152000000",
        );
        // A connector and a card of no GPU driver are not devices.
        write(root.path(), "sys/class/drm/card1-DP-1/status", "connected");
        write(
            root.path(),
            "sys/class/drm/card0/device/uevent",
            "DRIVER=simple-framebuffer",
        );
        assert_eq!(
            machine.gpu_devices(),
            vec![DeviceTelemetry {
                name: "card1 amdgpu".into(),
                utilization_percent: Some(37.0),
                memory_used_bytes: Some(2 << 30),
                celsius: Some(61.0),
                watts: Some(152.0),
            }]
        );
    }

    #[test]
    fn power_comes_from_the_supplies_sysfs_describes() {
        let root = tempfile::tempdir().unwrap();
        let machine = Machine::under(root.path());
        assert_eq!(machine.power(), Power::Unknown, "nothing described");
        write(root.path(), "sys/class/power_supply/BAT0/type", "Battery");
        write(
            root.path(),
            "sys/class/power_supply/BAT0/status",
            "Discharging",
        );
        assert_eq!(machine.power(), Power::Battery);
        write(root.path(), "sys/class/power_supply/AC/type", "Mains");
        write(root.path(), "sys/class/power_supply/AC/online", "0");
        assert_eq!(machine.power(), Power::Battery, "the charger is unplugged");
        write(root.path(), "sys/class/power_supply/AC/online", "1");
        assert_eq!(machine.power(), Power::Mains);
        write(root.path(), "sys/class/power_supply/AC/online", "0");
        write(root.path(), "sys/class/power_supply/BAT0/status", "Full");
        assert_eq!(
            machine.power(),
            Power::Unknown,
            "a full battery, no charger online"
        );
    }

    #[test]
    fn cuda_visible_devices_leave_the_host_its_own_gpus() {
        let uuid = Some("GPU-8f3a2c1d-0000-1111-2222-333344445555");
        assert!(cuda_visible(3, uuid, None), "unset: every device");
        assert!(!cuda_visible(3, uuid, Some("")), "empty: none");
        assert!(cuda_visible(3, uuid, Some("0, 3")));
        assert!(!cuda_visible(2, uuid, Some("0,3")));
        assert!(
            cuda_visible(2, uuid, Some("GPU-8f3a2c")),
            "a UUID's first characters"
        );
        assert!(!cuda_visible(2, uuid, Some("GPU-9")));
        assert!(
            !cuda_visible(2, None, Some("GPU-8f3a2c")),
            "no UUID read: not named"
        );
        assert!(
            !cuda_visible(1, uuid, Some("0,-1,1")),
            "the list ends at -1"
        );
        assert!(cuda_visible(0, uuid, Some("0,-1,1")));
        assert!(
            cuda_visible(5, uuid, Some("MIG-4f2a")),
            "a MIG instance: every GPU"
        );
    }

    #[test]
    fn nvml_readings_are_in_range_where_nvml_loads() {
        let Some(_) = nvml() else {
            eprintln!("skipped: NVML does not load here (no NVIDIA driver)");
            return;
        };
        let devices = nvml_devices();
        assert!(!devices.is_empty(), "NVML loads but lists no device");
        for d in &devices {
            assert!(!d.name.is_empty());
            assert!(
                d.utilization_percent
                    .is_none_or(|u| (0.0..=100.0).contains(&u)),
                "{d:?}"
            );
            assert!(
                d.celsius.is_none_or(|c| (-40.0..150.0).contains(&c)),
                "{d:?}"
            );
            assert!(d.watts.is_none_or(|w| (0.0..5_000.0).contains(&w)), "{d:?}");
        }
        assert!(Machine::system().gpu_devices().len() >= devices.len());
        assert!(
            Machine::under("/nonexistent").gpu_devices().is_empty(),
            "a test root reads no NVML"
        );
    }

    #[test]
    fn the_hottest_gpu_sensor_counts_and_no_other() {
        let root = tempfile::tempdir().unwrap();
        let machine = Machine::under(root.path());
        assert_eq!(machine.gpu_celsius(), None);
        write(root.path(), "sys/class/hwmon/hwmon0/name", "coretemp");
        write(root.path(), "sys/class/hwmon/hwmon0/temp1_input", "99000");
        assert_eq!(machine.gpu_celsius(), None, "a CPU sensor is not a GPU's");
        write(root.path(), "sys/class/hwmon/hwmon1/name", "amdgpu");
        write(root.path(), "sys/class/hwmon/hwmon1/temp1_input", "61000");
        write(root.path(), "sys/class/hwmon/hwmon1/temp2_input", "74500");
        write(
            root.path(),
            "sys/class/hwmon/hwmon1/temp2_label",
            "junction",
        );
        write(root.path(), "sys/class/hwmon/hwmon2/name", "nouveau");
        write(
            root.path(),
            "sys/class/hwmon/hwmon2/temp1_input",
            "not a number",
        );
        assert_eq!(machine.gpu_celsius(), Some(74.5));
    }

    #[test]
    fn free_cores_are_the_idle_share_of_the_time_passed() {
        let root = tempfile::tempdir().unwrap();
        let machine = Machine::under(root.path());
        assert_eq!(machine.cpu_times(), None);
        let stat = |user: u64, idle: u64, iowait: u64| {
            format!(
                "cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n\
                 cpu1 0 0 0 0 0 0 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0 0 0\n\
                 cpu3 0 0 0 0 0 0 0 0 0 0\nintr 1 2 3\nctxt 5\n"
            )
        };
        write(root.path(), "proc/stat", &stat(100, 300, 0));
        let before = machine.cpu_times().unwrap();
        // 400 ticks pass: 100 busy, 250 idle, 50 waiting on I/O (idle too).
        write(root.path(), "proc/stat", &stat(200, 550, 50));
        let after = machine.cpu_times().unwrap();
        assert_eq!(after.free_cores_since(&before), Some(3.0));
        assert_eq!(after.free_cores_since(&after), None, "no time passed");
    }

    #[test]
    fn the_verdict_pauses_for_each_rule_and_only_on_what_is_read() {
        let policy = Policy {
            pause_on_battery: true,
            max_gpu_celsius: Some(80.0),
            min_free_cores: Some(1.0),
        };
        let calm = Readings {
            power: Power::Mains,
            gpu_celsius: Some(60.0),
            free_cores: Some(3.0),
        };
        assert_eq!(policy.verdict(&calm), Verdict::Take);
        let pauses = |now: Readings| matches!(policy.verdict(&now), Verdict::Pause(_));
        assert!(pauses(Readings {
            power: Power::Battery,
            ..calm
        }));
        assert!(pauses(Readings {
            gpu_celsius: Some(80.0),
            ..calm
        }));
        assert!(pauses(Readings {
            free_cores: Some(0.5),
            ..calm
        }));
        let unread = Readings {
            power: Power::Unknown,
            gpu_celsius: None,
            free_cores: None,
        };
        assert_eq!(
            policy.verdict(&unread),
            Verdict::Take,
            "nothing read, nothing paused"
        );
        assert_eq!(
            Policy::default().verdict(&Readings {
                power: Power::Battery,
                ..calm
            }),
            Verdict::Take
        );
    }
}
