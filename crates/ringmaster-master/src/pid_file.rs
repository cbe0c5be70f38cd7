//! The master's pid file.

use std::path::PathBuf;

/// The master's pid file: written at start (its directory created),
/// removed at exit if it still holds this master's pid. One that cannot be
/// written stops the start: scripts and `stats` rely on it.
pub(crate) struct PidFile(Option<PathBuf>, u32);

impl PidFile {
    pub(crate) fn write(path: PathBuf, pid: u32) -> Result<PidFile, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                format!(
                    "cannot create the directory {} of {}: {e}",
                    dir.display(),
                    path.display()
                )
            })?;
        }
        std::fs::write(&path, format!("{pid}\n")).map_err(|e| {
            format!(
                "cannot write {}: {e}; point pid_file at a writable place",
                path.display()
            )
        })?;
        Ok(PidFile(Some(path), pid))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(path) = &self.0
            && std::fs::read_to_string(path).is_ok_and(|t| t.trim() == self.1.to_string())
        {
            let _ = std::fs::remove_file(path);
        }
    }
}
