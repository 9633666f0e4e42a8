//! The walls a Linux worker raises around itself, in order: a user and a
//! network namespace (the network one alone where user namespaces are
//! refused), no capabilities, `no_new_privs`, the data-segment limit when the
//! supervisor has no cgroup for it, Landlock, then seccomp (last: it refuses
//! `unshare`).

use super::{Layer, LayerState, SandboxReport, WorkerSandbox};
use landlock::{
    ABI, Access, AccessFs, AccessNet, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetError, RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The newest Landlock ABI whose rights the rules name (files with device
/// ioctls, TCP, abstract Unix sockets and signals); older kernels enforce
/// what they know (best effort), and the report says how much.
const LANDLOCK_ABI: ABI = ABI::V6;

/// Syscalls a worker never needs and an escaped guest would want: sockets of
/// any kind (a named Unix socket is a door to D-Bus, Docker or an ssh agent,
/// and Landlock before ABI v9 cannot close it), other processes' memory and
/// file descriptors, kernel attack surface (BPF, perf, io_uring, keys,
/// modules), mounts, namespaces, the clock and the machine itself.
const DENIED_SYSCALLS: &[i64] = &[
    libc::SYS_socket,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_process_madvise,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    libc::SYS_tkill,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_personality,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

pub(super) fn raise(settings: &WorkerSandbox, report: &mut SandboxReport) {
    let threads = thread_count();
    report.layers.push(network_namespace());
    report.layers.push(no_capabilities());
    report.layers.push(no_new_privs());
    if let Some(bytes) = settings.memory_rlimit {
        report.layers.push(data_limit(bytes));
    }
    report.layers.push(landlock(threads));
    report.layers.push(seccomp());
}

fn state(layer: Layer, result: Result<String, String>) -> LayerState {
    let applied = result.is_ok();
    LayerState {
        layer,
        applied,
        detail: result.unwrap_or_else(|e| e),
    }
}

fn network_namespace() -> LayerState {
    use rustix::thread::{UnshareFlags, unshare_unsafe};
    // A user namespace first, even for root: whatever capabilities the worker
    // then holds are the namespace's, not the machine's. (One thread only.)
    // SAFETY: `unshare_unsafe` is unsafe for `FILES` (threads that stop
    // sharing a file table); these flags leave the file table alone.
    let result = match unsafe { unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNET) } {
        Ok(()) => Ok("a network namespace of its own, inside a user namespace".to_string()),
        // User namespaces refused (a distribution's policy): root may still
        // make the network one.
        Err(first) => unsafe { unshare_unsafe(UnshareFlags::NEWNET) }
            .map(|()| "a network namespace of its own".to_string())
            .map_err(|second| {
                format!("no network namespace (with a user namespace: {first}; without: {second})")
            }),
    };
    state(Layer::NetworkNamespace, result)
}

fn no_capabilities() -> LayerState {
    use rustix::thread::{CapabilitySet, CapabilitySets, set_capabilities};
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    let result = set_capabilities(None, none)
        .map(|()| "none: effective, permitted and inheritable sets emptied".to_string())
        .map_err(|e| format!("could not drop them: {e}"));
    state(Layer::Capabilities, result)
}

fn no_new_privs() -> LayerState {
    let result = rustix::thread::set_no_new_privs(true)
        .and_then(|()| rustix::thread::no_new_privs())
        .map_err(|e| e.to_string())
        .and_then(|set| {
            if set {
                Ok("set".to_string())
            } else {
                Err("the kernel did not keep it".to_string())
            }
        });
    state(Layer::NoNewPrivs, result)
}

fn data_limit(bytes: u64) -> LayerState {
    // RLIMIT_DATA, not RLIMIT_AS: wasmtime reserves address space far beyond
    // what it maps writable (guard regions, pooled slots), and only what is
    // made writable counts against RLIMIT_DATA.
    let limit = rustix::process::Rlimit {
        current: Some(bytes),
        maximum: Some(bytes),
    };
    let result = rustix::process::setrlimit(rustix::process::Resource::Data, limit)
        .map(|()| format!("RLIMIT_DATA {} MiB (no cgroup could be made)", bytes >> 20))
        .map_err(|e| format!("neither a cgroup nor RLIMIT_DATA: {e}"));
    state(Layer::Memory, result)
}

fn landlock(threads: usize) -> LayerState {
    let abi = LANDLOCK_ABI;
    let device = AccessFs::from_read(abi) | AccessFs::WriteFile | AccessFs::IoctlDev;
    let restricted = || -> Result<RestrictionStatus, RulesetError> {
        Ruleset::default()
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::from_all(abi))?
            .scope(Scope::from_all(abi))?
            .create()?
            .add_rules(path_beneath_rules(
                readable_paths(),
                AccessFs::from_read(abi),
            ))?
            .add_rules(path_beneath_rules(device_paths(), device))?
            .restrict_self()
    };
    let result = match restricted() {
        Err(e) => Err(format!("Landlock refused the rules: {e}")),
        Ok(status) => match status.ruleset {
            RulesetStatus::NotEnforced => Err("Landlock is not enabled in this kernel".to_string()),
            enforced => {
                let how = if enforced == RulesetStatus::FullyEnforced {
                    "fully"
                } else {
                    "partly (an older kernel)"
                };
                let threads = if threads > 1 {
                    format!("; {threads} threads were running, only one is bound")
                } else {
                    String::new()
                };
                Ok(format!(
                    "files, TCP, abstract sockets and signals, {how} enforced{threads}"
                ))
            }
        },
    };
    state(Layer::Landlock, result)
}

/// What a worker may read: libraries, the GPU driver's files and the
/// system's description of the hardware. Never home directories, `/tmp`,
/// `/opt`, the working directory, or another process's `/proc` entry.
pub(super) fn readable_paths() -> Vec<PathBuf> {
    let fixed = [
        "/usr",
        "/lib",
        "/lib32",
        "/lib64",
        "/bin",
        "/sys",
        "/proc/self",
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/driver/nvidia",
        "/etc/ld.so.cache",
        "/etc/ld.so.conf",
        "/etc/ld.so.conf.d",
        "/etc/vulkan",
        "/etc/glvnd",
        "/etc/OpenCL",
        "/etc/alternatives",
        "/dev/urandom",
        "/dev/random",
        "/dev/zero",
    ];
    let mut paths: Vec<PathBuf> = fixed.iter().map(PathBuf::from).collect();
    // Where the provider pointed its loader (directories) and Vulkan (the
    // driver manifests themselves), unless that would open the home or the
    // working directory.
    let guarded: Vec<PathBuf> = [
        std::env::var_os("HOME").map(PathBuf::from),
        std::env::current_dir().ok(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let opens_guarded = |p: &Path| guarded.iter().any(|g| g.starts_with(p));
    for var in [
        "LD_LIBRARY_PATH",
        "VK_ICD_FILENAMES",
        "VK_DRIVER_FILES",
        "VK_ADD_DRIVER_FILES",
    ] {
        for entry in std::env::var_os(var).iter().flat_map(std::env::split_paths) {
            if entry.is_absolute() && !opens_guarded(&entry) {
                paths.push(entry);
            }
        }
    }
    paths.extend(std::env::current_exe().ok());
    paths
}

/// Device nodes a GPU driver opens read-write: render nodes (never the
/// display's primary nodes), NVIDIA's and AMD's compute devices.
fn device_paths() -> Vec<PathBuf> {
    let named = |dir: &str, prefix: &'static str| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(move |p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
    };
    let mut paths = vec![PathBuf::from("/dev/null"), PathBuf::from("/dev/kfd")];
    paths.extend(named("/dev/dri", "renderD"));
    paths.extend(named("/dev", "nvidia"));
    paths
}

fn seccomp() -> LayerState {
    let result = filters().and_then(|(denied, no_clone3)| {
        // clone3 answers "not implemented", so that threads fall back to
        // clone, where the filter can read the flags.
        for program in [denied, no_clone3] {
            seccompiler::apply_filter_all_threads(&program).map_err(|e| e.to_string())?;
        }
        Ok("no sockets, no new processes, no signals or limits for other processes; no ptrace, BPF, perf, \
            io_uring, keys, mounts, namespaces or terminal input injection"
            .to_string())
    });
    state(Layer::Seccomp, result)
}

fn filters() -> Result<(BpfProgram, BpfProgram), String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let own = std::process::id() as u64;
    let condition = |arg, op, value| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
    };
    let rule = |conditions| SeccompRule::new(conditions).map_err(|e| e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED_SYSCALLS.iter().map(|&n| (n, Vec::new())).collect();
    // A new process (clone without CLONE_THREAD) could outlive the worker's kill.
    let fork = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        0,
    )
    .map_err(|e| e.to_string())?;
    rules.insert(libc::SYS_clone, vec![rule(vec![fork])?]);
    // Signals and resource limits: this process only (0 or its own pid).
    let others = || -> Result<Vec<SeccompRule>, String> {
        Ok(vec![rule(vec![
            condition(0, SeccompCmpOp::Ne, 0)?,
            condition(0, SeccompCmpOp::Ne, own)?,
        ])?])
    };
    rules.insert(libc::SYS_kill, others()?);
    rules.insert(libc::SYS_prlimit64, others()?);
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![condition(0, SeccompCmpOp::Ne, own)?])?],
    );
    // Typing into, or reading through, a terminal the worker might still reach.
    let tty = [libc::TIOCSTI, libc::TIOCLINUX];
    rules.insert(
        libc::SYS_ioctl,
        tty.iter()
            .map(|&r| rule(vec![condition(1, SeccompCmpOp::Eq, r as u64)?]))
            .collect::<Result<_, _>>()?,
    );
    let denied = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let no_clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let compile = |f: SeccompFilter| -> Result<BpfProgram, String> {
        f.try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())
    };
    Ok((compile(denied)?, compile(no_clone3)?))
}

fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1)
}
