//! The walls a Linux worker raises around itself, in order: a network
//! namespace (a user namespace's too where the worker may not make one
//! alone), `no_new_privs`, the data-segment limit when the supervisor has no
//! cgroup for it, Landlock, then seccomp (last: it refuses `unshare`).

use super::{Layer, LayerState, SandboxReport, WorkerSandbox};
use landlock::{
    ABI, Access, AccessFs, AccessNet, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
    RulesetStatus, Scope, path_beneath_rules,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The newest Landlock ABI whose rights the rules name (files with device
/// ioctls, TCP, abstract Unix sockets and signals); older kernels enforce
/// what they know (best effort), and the report says how much.
const LANDLOCK_ABI: ABI = ABI::V6;

/// Syscalls a worker never needs and an escaped guest would want: other
/// processes' memory, kernel attack surface (BPF, perf, io_uring, keys,
/// modules), mounts and namespaces.
const DENIED_SYSCALLS: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
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
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_kexec_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
];

pub(super) fn raise(settings: &WorkerSandbox, report: &mut SandboxReport) {
    let threads = thread_count();
    report.layers.push(network_namespace());
    report.layers.push(no_new_privs());
    if let Some(bytes) = settings.memory_rlimit {
        report.layers.push(data_limit(bytes));
    }
    report.layers.push(landlock(threads));
    report.layers.push(seccomp());
}

fn state(layer: Layer, result: Result<String, String>) -> LayerState {
    let applied = result.is_ok();
    LayerState { layer, applied, detail: result.unwrap_or_else(|e| e) }
}

fn network_namespace() -> LayerState {
    // SAFETY: `unshare_unsafe` is unsafe for `FILES` (threads that stop
    // sharing a file table); these flags leave the file table alone.
    let alone = unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) };
    let result = match alone {
        Ok(()) => Ok("a network namespace of its own".to_string()),
        // Without CAP_SYS_ADMIN: a user namespace grants it (one thread only).
        Err(first) => unsafe {
            rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNET)
        }
        .map(|()| "a network namespace of its own, inside a user namespace".to_string())
        .map_err(|second| format!("no network namespace ({first}; with a user namespace: {second})")),
    };
    state(Layer::NetworkNamespace, result)
}

fn no_new_privs() -> LayerState {
    let result = rustix::thread::set_no_new_privs(true)
        .and_then(|()| rustix::thread::no_new_privs())
        .map_err(|e| e.to_string())
        .and_then(|set| if set { Ok("set".to_string()) } else { Err("the kernel did not keep it".to_string()) });
    state(Layer::NoNewPrivs, result)
}

fn data_limit(bytes: u64) -> LayerState {
    // RLIMIT_DATA, not RLIMIT_AS: wasmtime reserves address space far beyond
    // what it maps writable (guard regions, pooled slots), and only what is
    // made writable counts against RLIMIT_DATA.
    let limit = rustix::process::Rlimit { current: Some(bytes), maximum: Some(bytes) };
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
            .add_rules(path_beneath_rules(readable_paths(), AccessFs::from_read(abi)))?
            .add_rules(path_beneath_rules(device_paths(), device))?
            .restrict_self()
    };
    let result = match restricted() {
        Err(e) => Err(format!("Landlock refused the rules: {e}")),
        Ok(status) => match status.ruleset {
            RulesetStatus::NotEnforced => Err("Landlock is not enabled in this kernel".to_string()),
            enforced => {
                let how = if enforced == RulesetStatus::FullyEnforced { "fully" } else { "partly (an older kernel)" };
                let threads = if threads > 1 { format!("; {threads} threads were running, only one is bound") } else { String::new() };
                Ok(format!("files, TCP, abstract sockets and signals, {how} enforced{threads}"))
            }
        },
    };
    state(Layer::Landlock, result)
}

/// What a worker may read: libraries, the GPU driver's files and the
/// system's description of the hardware. Never home directories, `/tmp`, the
/// working directory, or another process's `/proc` entry.
pub(super) fn readable_paths() -> Vec<PathBuf> {
    let fixed = [
        "/usr", "/lib", "/lib32", "/lib64", "/bin", "/opt", "/sys", "/proc/self", "/proc/cpuinfo", "/proc/meminfo",
        "/proc/stat", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/vulkan", "/etc/glvnd",
        "/etc/OpenCL", "/etc/alternatives", "/dev/urandom", "/dev/random", "/dev/zero",
    ];
    let mut paths: Vec<PathBuf> = fixed.iter().map(PathBuf::from).collect();
    // Directories the provider pointed its loader and Vulkan at.
    for var in ["LD_LIBRARY_PATH", "VK_ICD_FILENAMES", "VK_DRIVER_FILES", "VK_ADD_DRIVER_FILES"] {
        for entry in std::env::var_os(var).iter().flat_map(std::env::split_paths) {
            let dir = if entry.is_file() { entry.parent().map(PathBuf::from) } else { Some(entry) };
            paths.extend(dir.filter(|d| d.is_absolute()));
        }
    }
    paths.extend(std::env::current_exe().ok());
    paths
}

/// Device nodes a GPU driver opens read-write.
fn device_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("/dev/null"), PathBuf::from("/dev/dri"), PathBuf::from("/dev/kfd")];
    let nvidia = std::fs::read_dir("/dev").into_iter().flatten().flatten().map(|e| e.path());
    paths.extend(nvidia.filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nvidia"))));
    paths
}

fn seccomp() -> LayerState {
    let built = || -> Result<BpfProgram, String> {
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED_SYSCALLS.iter().map(|&n| (n, Vec::new())).collect();
        let not_unix = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, libc::AF_UNIX as u64)
            .map_err(|e| e.to_string())?;
        rules.insert(libc::SYS_socket, vec![SeccompRule::new(vec![not_unix]).map_err(|e| e.to_string())?]);
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(libc::EPERM as u32), arch)
            .map_err(|e| e.to_string())?;
        filter.try_into().map_err(|e: seccompiler::BackendError| e.to_string())
    };
    let result = built().and_then(|program| {
        seccompiler::apply_filter_all_threads(&program)
            .map(|()| "no sockets but Unix ones; no ptrace, BPF, perf, io_uring, keys, mounts or namespaces".to_string())
            .map_err(|e| e.to_string())
    });
    state(Layer::Seccomp, result)
}

fn thread_count() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1)
}
