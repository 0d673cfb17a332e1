//! Output locations checked before the work.
//!
//! A registration can take minutes; finding out afterwards that its output directory is missing or
//! read-only loses it. Every command and DSL builtin that writes files calls [`prepare`] (or
//! [`make_room`] for a single file) before it computes: missing parent directories are created (as
//! `mkdir -p`), and a location that cannot be written (a parent that is a file, a read-only directory,
//! an output that is an existing directory, an output that is one of the inputs) is refused at once
//! with an error that names it. The files themselves are still written atomically at the end (a
//! temporary file in the same directory, then a rename), so a reader never sees a half-written one.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The directory a file is written in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes a file atomically: `write` fills a temporary file in `path`'s directory, which then replaces
/// `path` (so a reader never sees a half-written file, and a failed write leaves the old one). Missing
/// parent directories are created ([`make_room`]).
///
/// Errors: those of [`make_room`]; [`Error::Io`] for a directory that cannot be written or a failed
/// rename; those of `write`.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    make_room(path)?;
    let dir = parent_dir(path);
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    write(tmp.path())?;
    tmp.persist(path).map_err(|e| Error::Io { path: path.into(), source: e.error })?;
    Ok(())
}

/// [`write_atomically`] of `bytes`.
///
/// Errors: as [`write_atomically`].
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| std::fs::write(tmp, bytes).map_err(|source| Error::Io { path: path.into(), source }))
}

/// Makes sure `out` can be written: creates its missing parent directories, refuses an output that is
/// an existing directory or whose parent is not a directory, and checks that the directory takes a new
/// file (a temporary file is created and removed).
///
/// Errors: [`Error::IsDirectory`] when `out` is a directory; [`Error::Io`] (naming the directory) when
/// a parent cannot be created or written.
pub fn make_room(out: &Path) -> Result<()> {
    if out.is_dir() {
        return Err(Error::IsDirectory { path: out.into() });
    }
    let dir = parent_dir(out);
    if dir.exists() && !dir.is_dir() {
        return Err(Error::Io {
            path: dir.into(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "is a file, not a directory"),
        });
    }
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
        tracing::info!("created output directory {}", dir.display());
    }
    // Probe: the directory must take a new file (read-only directories, full disks where it shows).
    tempfile::NamedTempFile::new_in(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
    Ok(())
}

/// The absolute, symlink-resolved form of a path that may not exist yet (its parent resolved).
fn resolved(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    match (std::fs::canonicalize(parent_dir(p)), p.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => p.to_path_buf(),
    }
}

/// Checks every output location before the work starts: [`make_room`] for each, and none of them may
/// be one of `inputs` (compared after resolving symlinks and relative paths).
///
/// Errors: [`Error::OverwriteInput`] when an output is an input; those of [`make_room`].
pub fn prepare(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    let ins: Vec<PathBuf> = inputs.iter().map(|p| resolved(p)).collect();
    for out in outputs {
        if ins.contains(&resolved(out)) {
            return Err(Error::OverwriteInput { path: out.to_path_buf() });
        }
        make_room(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_directories_are_made_and_bad_locations_refused() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("a/b/r_warped.nii.gz");
        make_room(&out).unwrap();
        assert!(d.path().join("a/b").is_dir());
        assert!(!out.exists(), "only the directory is made");
        // An output that is a directory.
        assert!(matches!(make_room(&d.path().join("a")), Err(Error::IsDirectory { .. })));
        // A parent that is a file.
        std::fs::write(d.path().join("f"), b"x").unwrap();
        assert!(matches!(make_room(&d.path().join("f/out.nii")), Err(Error::Io { .. })));
        // An output that is an input, reached through another spelling.
        let input = d.path().join("in.nii");
        std::fs::write(&input, b"x").unwrap();
        let other = d.path().join("a/../in.nii");
        assert!(matches!(prepare(&[&other], &[&input]), Err(Error::OverwriteInput { .. })));
        prepare(&[&d.path().join("out.nii")], &[&input]).unwrap();
    }
}
