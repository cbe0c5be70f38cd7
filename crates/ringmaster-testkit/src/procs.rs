//! Processes as /proc shows them: every pid, a process's children, its
//! parent, whether it is alive, the binary it runs.

/// Every process's pid, from /proc (in no order).
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = pids()
        .into_iter()
        .filter(|p| ppid_of(*p) == Some(pid))
        .collect();
    out.sort_unstable();
    out
}

/// The parent pid of `pid`, or `None` if it is gone (or a zombie).
pub fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// The inode of the binary process `pid` runs.
pub fn exe_inode(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino()
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    ppid_of(pid).is_some()
}
