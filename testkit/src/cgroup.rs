//! A memory cgroup of its own for a process the tests start, so the process runs under the
//! memory limit its container would get: the kernel enforces the limit (reclaim, then the OOM
//! killer), and what reads the limit from the cgroup (the collector's memory_limiter) sees it.
//!
//! The cgroup is a child of this process's own memory cgroup: in the unified (v2) hierarchy
//! when the memory controller is enabled for children there, else in the v1 memory hierarchy.
//! [`MemoryCgroup::create`] says why when neither is usable (no memory controller, not
//! writable, not root). The cgroup is removed on drop, once its processes are gone.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Which hierarchy a [`MemoryCgroup`] lives in; the two name their files differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// A child memory cgroup with a limit, removed on drop.
#[derive(Debug)]
pub struct MemoryCgroup {
    path: PathBuf,
    version: CgroupVersion,
}

/// How long drop waits for the cgroup's processes to be gone before it kills them, and then
/// before it gives up removing the cgroup.
const DRAIN: Duration = Duration::from_secs(2);
const GIVE_UP: Duration = Duration::from_secs(10);

static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

/// One line of `/proc/self/mountinfo`: the mount's root within its filesystem, where it is
/// mounted, its filesystem type and its super options.
struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    super_options: Vec<String>,
}

fn mounts() -> io::Result<Vec<Mount>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            Some(Mount {
                root: fields.get(3)?.to_string(),
                point: PathBuf::from(fields.get(4)?),
                fstype: after.next()?.to_owned(),
                super_options: after
                    .nth(1)
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect())
}

/// This process's cgroup path as `/proc/self/cgroup` names it: in the unified hierarchy
/// (`v2`), else in the v1 hierarchy of the memory controller.
fn own_cgroup(v2: bool) -> io::Result<Option<String>> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if v2 {
            id == "0" && controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == "memory")
        };
        matches.then(|| path.to_owned())
    }))
}

/// Where cgroup `path` (as `/proc/self/cgroup` names it) is in the mounted filesystem.
fn directory(mount: &Mount, path: &str) -> PathBuf {
    let relative = match path.strip_prefix(mount.root.as_str()) {
        Some(rest) if mount.root != "/" => rest,
        _ => path,
    };
    mount.point.join(relative.trim_start_matches('/'))
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// The parent under which a v2 child gets the memory controller, if there is one.
fn v2_parent(mounts: &[Mount]) -> Result<PathBuf, String> {
    let own = own_cgroup(true)
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?
        .ok_or("this process is in no cgroup v2")?;
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or("no cgroup2 filesystem is mounted")?;
    let parent = directory(mount, &own);
    let subtree = read_trimmed(&parent.join("cgroup.subtree_control"))
        .map_err(|e| format!("reading {}/cgroup.subtree_control: {e}", parent.display()))?;
    if subtree.split_whitespace().any(|c| c == "memory") {
        Ok(parent)
    } else {
        Err(format!(
            "the memory controller is not enabled for children of {} (cgroup.subtree_control: {subtree:?})",
            parent.display()
        ))
    }
}

/// This process's own v1 memory cgroup.
fn v1_parent(mounts: &[Mount]) -> Result<PathBuf, String> {
    let own = own_cgroup(false)
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?
        .ok_or("this process is in no v1 memory cgroup")?;
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == "memory"))
        .ok_or("no v1 memory cgroup filesystem is mounted")?;
    let parent = directory(mount, &own);
    if parent.join("memory.limit_in_bytes").exists() {
        Ok(parent)
    } else {
        Err(format!("{} has no memory.limit_in_bytes", parent.display()))
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// `key value` lines (memory.events, memory.oom_control, memory.stat): the value of `key`.
fn keyed(path: &Path, key: &str) -> io::Result<Option<u64>> {
    Ok(std::fs::read_to_string(path)?.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    }))
}

impl MemoryCgroup {
    /// A new child memory cgroup limited to `limit_bytes` (without swap), or why none can be
    /// made here.
    pub fn create(limit_bytes: u64) -> Result<MemoryCgroup, String> {
        let mounts = mounts().map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
        let (parent, version) = match v2_parent(&mounts) {
            Ok(parent) => (parent, CgroupVersion::V2),
            Err(v2) => match v1_parent(&mounts) {
                Ok(parent) => (parent, CgroupVersion::V1),
                Err(v1) => return Err(format!("no usable memory cgroup: v2: {v2}; v1: {v1}")),
            },
        };
        let path = loop {
            let name = format!(
                "telemux-test-{}-{}",
                std::process::id(),
                SEQUENCE.fetch_add(1, Ordering::Relaxed)
            );
            let path = parent.join(name);
            match std::fs::create_dir(&path) {
                Ok(()) => break path,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating {}: {e}", path.display())),
            }
        };
        let cgroup = MemoryCgroup { path, version };
        cgroup
            .set_limit(limit_bytes)
            .map_err(|e| format!("limiting {}: {e}", cgroup.path.display()))?;
        Ok(cgroup)
    }

    fn set_limit(&self, limit_bytes: u64) -> io::Result<()> {
        let limit = limit_bytes.to_string();
        match self.version {
            CgroupVersion::V2 => {
                write_file(&self.path.join("memory.max"), &limit)?;
                // As a container without swap: the limit is the whole of its memory.
                if self.path.join("memory.swap.max").exists() {
                    write_file(&self.path.join("memory.swap.max"), "0")?;
                }
            }
            CgroupVersion::V1 => {
                write_file(&self.path.join("memory.limit_in_bytes"), &limit)?;
                // memory + swap, which must not be below the memory limit.
                if self.path.join("memory.memsw.limit_in_bytes").exists() {
                    write_file(&self.path.join("memory.memsw.limit_in_bytes"), &limit)?;
                }
            }
        }
        let set = self.limit_bytes()?;
        if set != limit_bytes {
            return Err(io::Error::other(format!(
                "asked for {limit_bytes} bytes, the kernel set {set}"
            )));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    fn read_u64(&self, file: &str) -> io::Result<u64> {
        let text = read_trimmed(&self.path.join(file))?;
        if text == "max" {
            return Ok(u64::MAX);
        }
        text.parse()
            .map_err(|e| io::Error::other(format!("{file}: {text:?}: {e}")))
    }

    /// The limit as the kernel holds it.
    pub fn limit_bytes(&self) -> io::Result<u64> {
        self.read_u64(match self.version {
            CgroupVersion::V2 => "memory.max",
            CgroupVersion::V1 => "memory.limit_in_bytes",
        })
    }

    /// Memory charged to the cgroup now (anonymous memory, kernel memory and page cache).
    pub fn usage_bytes(&self) -> io::Result<u64> {
        self.read_u64(match self.version {
            CgroupVersion::V2 => "memory.current",
            CgroupVersion::V1 => "memory.usage_in_bytes",
        })
    }

    /// The most memory ever charged to the cgroup, when the kernel records it (v1 always; v2
    /// from Linux 5.19, `memory.peak`).
    pub fn peak_bytes(&self) -> io::Result<Option<u64>> {
        let file = match self.version {
            CgroupVersion::V2 => "memory.peak",
            CgroupVersion::V1 => "memory.max_usage_in_bytes",
        };
        if !self.path.join(file).exists() {
            return Ok(None);
        }
        self.read_u64(file).map(Some)
    }

    /// Processes of the cgroup the OOM killer killed, when the kernel counts them (v2; v1 from
    /// Linux 4.13, `oom_kill` in `memory.oom_control`).
    pub fn oom_kills(&self) -> io::Result<Option<u64>> {
        match self.version {
            CgroupVersion::V2 => keyed(&self.path.join("memory.events"), "oom_kill"),
            CgroupVersion::V1 => keyed(&self.path.join("memory.oom_control"), "oom_kill"),
        }
    }

    /// How often usage hit the limit, so the kernel had to reclaim (page cache, mostly) before
    /// it could charge more (v1 `memory.failcnt`, v2 `max` in `memory.events`). Not an OOM.
    pub fn limit_hits(&self) -> io::Result<u64> {
        match self.version {
            CgroupVersion::V2 => {
                Ok(keyed(&self.path.join("memory.events"), "max")?.unwrap_or_default())
            }
            CgroupVersion::V1 => self.read_u64("memory.failcnt"),
        }
    }

    /// One counter of `memory.stat` (v1 names such as `total_rss`, `total_cache`; v2 names
    /// such as `anon`, `file`).
    pub fn stat(&self, key: &str) -> io::Result<Option<u64>> {
        keyed(&self.path.join("memory.stat"), key)
    }

    /// The pids in the cgroup.
    pub fn pids(&self) -> io::Result<Vec<u32>> {
        Ok(std::fs::read_to_string(self.path.join("cgroup.procs"))?
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect())
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) -> io::Result<()> {
        write_file(&self.path.join("cgroup.procs"), &pid.to_string())
    }

    /// A hook for `Command::pre_exec` that moves the forked child into the cgroup before it
    /// executes the program, so the program is limited from its first instruction (and reads
    /// the limit at its start). The file is opened here, close-on-exec; the hook only calls
    /// `getpid` and `write` on it, which are async-signal-safe, and allocates nothing.
    pub fn pre_exec_hook(
        &self,
    ) -> io::Result<impl FnMut() -> io::Result<()> + Send + Sync + 'static> {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))?;
        Ok(move || join_from_child(procs.as_raw_fd()))
    }
}

/// Writes this process's pid to `fd` (a `cgroup.procs`). Runs between fork and exec.
fn join_from_child(fd: RawFd) -> io::Result<()> {
    // SAFETY: getpid has no preconditions.
    let mut pid = unsafe { libc::getpid() } as u32;
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (pid % 10) as u8;
        pid /= 10;
        if pid == 0 {
            break;
        }
    }
    let text = &digits[start..];
    // SAFETY: `text` is a live buffer of `text.len()` bytes; `fd` is open for writing (the hook
    // owns the file).
    let written = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
    if written == text.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for MemoryCgroup {
    /// Waits for the cgroup's processes to be gone (a killed child is reaped elsewhere),
    /// kills those still there after [`DRAIN`] (only processes the tests put here), and
    /// removes the cgroup.
    fn drop(&mut self) {
        let start = Instant::now();
        let mut killed = false;
        loop {
            let pids = self.pids().unwrap_or_default();
            if pids.is_empty() {
                match std::fs::remove_dir(&self.path) {
                    Ok(()) => return,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                    Err(_) if start.elapsed() < GIVE_UP => {}
                    Err(e) => {
                        eprintln!("leaving cgroup {}: {e}", self.path.display());
                        return;
                    }
                }
            } else if start.elapsed() >= DRAIN && !killed {
                for pid in pids {
                    if let Ok(pid) = libc::pid_t::try_from(pid) {
                        // SAFETY: kill(2) on a process in the cgroup this value created.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                killed = true;
            } else if start.elapsed() >= GIVE_UP {
                eprintln!(
                    "leaving cgroup {}: processes {pids:?} are still in it",
                    self.path.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn a_child_joins_before_exec_is_limited_and_the_cgroup_goes_with_it() {
        let limit = 64 * 1024 * 1024;
        let cgroup = match MemoryCgroup::create(limit) {
            Ok(cgroup) => cgroup,
            Err(why) if std::env::var_os("CI").is_some() => panic!("required under CI: {why}"),
            Err(why) => {
                eprintln!("SKIPPED: {why}");
                return;
            }
        };
        assert_eq!(cgroup.limit_bytes().unwrap(), limit);
        let mut command = std::process::Command::new("sleep");
        command.arg("30");
        // SAFETY: see `MemoryCgroup::pre_exec_hook`.
        unsafe { command.pre_exec(cgroup.pre_exec_hook().unwrap()) };
        let mut child = command.spawn().unwrap();
        assert_eq!(cgroup.pids().unwrap(), vec![child.id()]);
        let name = cgroup
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        assert!(own.contains(&name), "{own}");
        assert_eq!(cgroup.oom_kills().unwrap().unwrap_or_default(), 0);
        child.kill().unwrap();
        child.wait().unwrap();
        let path = cgroup.path().to_owned();
        drop(cgroup);
        assert!(!path.exists(), "{} was not removed", path.display());
    }
}
