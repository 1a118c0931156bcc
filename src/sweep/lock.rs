//! The lock on a results file: one sweep at a time writes it, and a sweep that died (SIGKILL, a
//! cancelled Slurm task, a lost node) does not keep its rerun out.
//!
//! The lock is a file beside the results (`R.jsonl.lock`) that names its holder (host and pid),
//! is `flock`ed while held, and is emptied when the holder finishes. While it runs, the holder
//! rewrites it every few seconds, synced to disk so that other NFS clients see it (a heartbeat).
//! A sweep that finds the lock file naming a holder:
//! - flock refuses: the holder is alive; refuse, naming it;
//! - flock grants and the holder is a process of this host: the kernel dropped the flock of a
//!   process that died; take the lock over at once;
//! - the holder is on another host, or this file system has no flock: flock proves nothing there
//!   (NFS mounted without locks keeps them per host), so the heartbeat decides: watched for three
//!   beats, it moves (refuse, naming the holder) or it does not (the holder is gone; take over).
//!
//! A holder whose lock was taken over (it stalled for three beats, say a frozen NFS client) sees
//! its name gone at its next beat and writes no more units.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a holder rewrites its lock file.
pub const BEAT_SECONDS: u64 = 10;

/// Beats a lock file must stay still before its holder counts as gone.
const STILL_BEATS: u64 = 3;

/// Who holds a lock: what the lock file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Seconds between the holder's rewrites of the lock file.
    pub beat_seconds: u64,
    /// Rewrites so far; every rewrite changes the file.
    pub beat: u64,
}

impl Holder {
    fn this_process(beat_seconds: u64) -> Holder {
        Holder { host: host_name(), pid: std::process::id(), beat_seconds, beat: 0 }
    }

    fn is(&self, other: &Holder) -> bool {
        self.host == other.host && self.pid == other.pid
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on host {}", self.pid, self.host)
    }
}

/// This machine's name, as `hostname` prints it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// Whether a process of this host is running, where the system says (Linux: /proc).
fn running(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    proc.join("self").exists().then(|| proc.join(pid.to_string()).exists())
}

/// The lock file of a results file.
pub fn lock_path(results: &Path) -> PathBuf {
    let mut name = results.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    results.with_file_name(name)
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::bad_input(format!("{}: cannot {what}: {e}", path.display()))
}

/// What a lock file holds: a holder, nothing (free), or bytes that are neither (a write in
/// progress, or damage).
fn read_holder(path: &Path) -> std::io::Result<(Vec<u8>, Option<Holder>)> {
    // A fresh open each time: NFS clients revalidate their cache on open (close-to-open).
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let holder = serde_json::from_slice(&bytes).ok();
    Ok((bytes, holder))
}

/// Rewrites the lock file in place (the same inode, which the flock is on) and syncs it.
fn write_holder(mut file: &File, holder: &Holder) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(holder).map_err(std::io::Error::other)?;
    file.rewind()?;
    file.write_all(&bytes)?;
    file.set_len(bytes.len() as u64)?;
    file.sync_data()
}

/// Whether flock is unavailable here (some network file systems), rather than failing.
fn no_locks(e: &std::io::Error) -> bool {
    const ENOLCK: i32 = 37; // Linux: "No locks available" (NFS without a lock manager)
    e.kind() == std::io::ErrorKind::Unsupported || (cfg!(target_os = "linux") && e.raw_os_error() == Some(ENOLCK))
}

/// A held lock; released (the file emptied, the flock dropped) when dropped.
pub struct Lock {
    path: PathBuf,
    file: Arc<File>,
    holder: Holder,
    lost: Arc<AtomicBool>,
    heartbeat: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Lock {
    /// Takes the lock of `results` (see the module documentation), or says who holds it.
    pub fn acquire(results: &Path) -> Result<Lock> {
        let path = lock_path(results);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, "open", e))?;
        let flock = match file.try_lock() {
            Ok(()) => true,
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = read_holder(&path).ok().and_then(|(_, holder)| holder);
                return Err(held_by(results, &path, holder.as_ref()));
            }
            Err(std::fs::TryLockError::Error(e)) if no_locks(&e) => false,
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path, "lock", e)),
        };
        let me = Holder::this_process(BEAT_SECONDS);
        let (bytes, found) = read_holder(&path).map_err(|e| io_error(&path, "read", e))?;
        match found {
            _ if bytes.is_empty() => {}
            Some(old) if old.host == me.host && (flock || running(old.pid) == Some(false)) => {
                eprintln!("note: {}: took over the lock of {old}, which is no longer running", path.display());
            }
            old => {
                let beat_seconds = old.as_ref().map_or(BEAT_SECONDS, |h| h.beat_seconds).clamp(1, 600);
                let named = old.as_ref().map_or("an unreadable holder".to_string(), |h| h.to_string());
                let wait = Duration::from_secs(STILL_BEATS * beat_seconds);
                eprintln!("note: {}: names {named}; watching its heartbeat for {} s", path.display(), wait.as_secs());
                if let Some(now) = moved(&path, &bytes, wait) {
                    return Err(held_by(results, &path, now.as_ref().or(old.as_ref())));
                }
                eprintln!("note: {}: took over the lock of {named}, whose heartbeat stopped", path.display());
            }
        }
        write_holder(&file, &me).map_err(|e| io_error(&path, "write", e))?;
        let file = Arc::new(file);
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = Some(beat(path.clone(), file.clone(), me.clone(), lost.clone()));
        Ok(Lock { path, file, holder: me, lost, heartbeat })
    }

    /// Whether another sweep took this lock over (this one stalled past its heartbeat).
    pub fn lost(&self) -> Option<Error> {
        let lost = self.lost.load(Ordering::SeqCst);
        lost.then(|| {
            let now = read_holder(&self.path).ok().and_then(|(_, holder)| holder);
            Error::bad_input(format!(
                "{}: this sweep stalled longer than its heartbeat and {} took the results over; stopping without writing more",
                self.path.display(),
                now.map_or("another sweep".to_string(), |h| h.to_string())
            ))
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.heartbeat.take() {
            drop(stop);
            let _ = thread.join();
        }
        let ours = read_holder(&self.path).ok().and_then(|(_, holder)| holder).is_some_and(|h| h.is(&self.holder));
        if ours {
            let _ = self.file.set_len(0);
            let _ = self.file.sync_data();
        }
    }
}

/// Watches a lock file for `wait`: its new content if it changed (the holder is alive), None
/// if it stayed as `bytes`. A file emptied meanwhile was released, and counts as unchanged.
fn moved(path: &Path, bytes: &[u8], wait: Duration) -> Option<Option<Holder>> {
    let start = Instant::now();
    while start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(250));
        match read_holder(path) {
            Ok((now, _)) if now.is_empty() => return None,
            Ok((now, holder)) if now != bytes => return Some(holder),
            _ => {}
        }
    }
    None
}

/// The holder's heartbeat: rewrites the lock file every beat until stopped, or until the file
/// names someone else (then `lost` is set and the beats stop).
fn beat(path: PathBuf, file: Arc<File>, mut me: Holder, lost: Arc<AtomicBool>) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(Duration::from_secs(me.beat_seconds)) {
            match read_holder(&path) {
                Ok((_, Some(now))) if !now.is(&me) => {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                // A beat that cannot be written (a full disk, a network hiccup) is tried again
                // at the next one; three missed in a row let another sweep take over.
                _ => {
                    me.beat += 1;
                    let _ = write_holder(&file, &me);
                }
            }
        }
    });
    (stop, thread)
}

fn held_by(results: &Path, lock: &Path, holder: Option<&Holder>) -> Error {
    let who = holder.map_or("another perplex sweep".to_string(), |h| format!("another perplex sweep ({h})"));
    Error::bad_input(format!(
        "{}: {who} is writing to this file (lock {}); give each job its own --out (then `perplex sweep merge`), \
         or wait for it to finish",
        results.display(),
        lock.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("perplex-lock-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_second_lock_is_refused_and_a_released_one_is_free() {
        let dir = scratch("second");
        let results = dir.join("r.jsonl");
        let lock = Lock::acquire(&results).unwrap();
        let error = Lock::acquire(&results).err().unwrap().to_string();
        assert!(error.contains(&format!("pid {} on host {}", std::process::id(), host_name())), "{error}");
        drop(lock);
        assert!(std::fs::read(lock_path(&results)).unwrap().is_empty(), "emptied on release");
        drop(Lock::acquire(&results).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dead_holder_of_this_host_is_taken_over_at_once() {
        let dir = scratch("dead");
        let results = dir.join("r.jsonl");
        let dead = Holder { host: host_name(), pid: u32::MAX - 1, beat_seconds: 600, beat: 7 };
        std::fs::write(lock_path(&results), serde_json::to_vec(&dead).unwrap()).unwrap();
        let start = Instant::now();
        let lock = Lock::acquire(&results).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5), "no heartbeat wait on this host");
        assert_eq!(read_holder(&lock_path(&results)).unwrap().1.unwrap().pid, std::process::id());
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn another_hosts_holder_counts_while_its_heartbeat_moves() {
        let dir = scratch("remote");
        let results = dir.join("r.jsonl");
        let path = lock_path(&results);
        let mut remote = Holder { host: "elsewhere".into(), pid: 4242, beat_seconds: 1, beat: 0 };
        std::fs::write(&path, serde_json::to_vec(&remote).unwrap()).unwrap();
        // Beating: refused, naming the remote holder.
        let beating = Arc::new(AtomicBool::new(true));
        let beater = {
            let (path, beating, mut remote) = (path.clone(), beating.clone(), remote.clone());
            std::thread::spawn(move || {
                while beating.load(Ordering::SeqCst) {
                    remote.beat += 1;
                    std::fs::write(&path, serde_json::to_vec(&remote).unwrap()).unwrap();
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        let error = Lock::acquire(&results).err().expect("refused while the heartbeat moves").to_string();
        assert!(error.contains("pid 4242 on host elsewhere"), "{error}");
        beating.store(false, Ordering::SeqCst);
        beater.join().unwrap();
        // Still for three beats: taken over.
        remote.beat = 99;
        std::fs::write(&path, serde_json::to_vec(&remote).unwrap()).unwrap();
        let start = Instant::now();
        let lock = Lock::acquire(&results).unwrap();
        assert!(start.elapsed() >= Duration::from_secs(3), "watched for three beats");
        assert!(lock.lost().is_none());
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
