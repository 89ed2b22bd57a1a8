//! How MSP files are found and read: every file of an MSP folder (`cacerts/`, `keystore/`,
//! `config.yaml`, ...) and every PEM file named on a command line goes through here, so
//! that a file too large or a FIFO cannot take the memory or block the loader, whichever
//! way it is reached.

use crate::error::{LoadError, io};
use std::fs::Metadata;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest MSP file read, in bytes: 4 MiB. A PEM certificate is about 1 KiB, a key
/// less, a `config.yaml` a few hundred bytes, and a bundle of every public root CA about
/// 200 KiB; a CRL of 4 MiB lists some 75,000 revoked certificates (about 55 bytes of
/// base64 each), far more than a Fabric CA revokes. The bound stops a wrong or hostile
/// file from taking the memory: a 259 MB `cacerts` PEM was read whole (972 MB resident).
/// It is also `core.yaml`'s bound in the CLI.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The largest channel configuration block read, in bytes: 100 MiB, the most a Fabric
/// peer's or orderer's gRPC accepts in one message (`MaxRecvMsgSize`), so no block a
/// Fabric network can deliver is refused. Without a bound, a wrong path (a disk image, a
/// ledger file) was read whole before it failed to decode.
pub const MAX_BLOCK_BYTES: u64 = 100 << 20;

/// Reads the file at `path`, as the loader reads every MSP file. It must be a regular file
/// (a symbolic link to one is followed, as Kubernetes mounts secrets): a FIFO would block
/// the loader and a device never ends, so anything else is [`LoadError::NotAFile`] and is
/// not opened. A file over [`MAX_FILE_BYTES`] is [`LoadError::TooLarge`], judged by its
/// size before it is opened and again while it is read (it may grow in between).
///
/// Public so that tools read a certificate exactly as a node would (`fabric-gossip
/// validate`).
pub fn read_msp_file(path: impl AsRef<Path>) -> Result<Vec<u8>, LoadError> {
    read_file(path.as_ref(), MAX_FILE_BYTES, too_large)
}

/// Reads a channel configuration block (a `common.Block` file, as `peer channel fetch
/// config` writes it) with the same care as an MSP file: a regular file or a link to one,
/// [`LoadError::BlockTooLarge`] past [`MAX_BLOCK_BYTES`].
pub fn read_channel_config_file(path: impl AsRef<Path>) -> Result<Vec<u8>, LoadError> {
    read_file(path.as_ref(), MAX_BLOCK_BYTES, |path| {
        LoadError::BlockTooLarge {
            path: path.to_owned(),
            limit: MAX_BLOCK_BYTES,
        }
    })
}

/// The regular file at `path`, refused past `limit` bytes (with `over(path)`), judged by
/// its size before it is opened and again while it is read.
fn read_file(path: &Path, limit: u64, over: fn(&Path) -> LoadError) -> Result<Vec<u8>, LoadError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    judge(path, &meta, limit, over)?;
    read_opened(path, limit, over)
}

/// Whether what `meta` describes may be read: a regular file within `limit`.
fn judge(
    path: &Path,
    meta: &Metadata,
    limit: u64,
    over: fn(&Path) -> LoadError,
) -> Result<(), LoadError> {
    if let Some(kind) = not_a_file(meta) {
        return Err(LoadError::NotAFile {
            path: path.to_owned(),
            kind,
        });
    }
    if meta.len() > limit {
        return Err(over(path));
    }
    Ok(())
}

/// [`read_file`] once the path looked like a regular file: the checks again on what was
/// opened, since the path may have been swapped for a FIFO in between. On Unix the file is
/// opened non-blocking, so opening a FIFO returns at once (a blocking open waits for a
/// writer, forever); reading a regular file is the same either way.
fn read_opened(
    path: &Path,
    limit: u64,
    over: fn(&Path) -> LoadError,
) -> Result<Vec<u8>, LoadError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    judge(path, &meta, limit, over)?;
    read_capped(file, path, limit, over)
}

/// What `reader` (the file at `path`) holds, refused past `limit` without reading more
/// than one byte past it.
fn read_capped(
    reader: impl Read,
    path: &Path,
    limit: u64,
    over: fn(&Path) -> LoadError,
) -> Result<Vec<u8>, LoadError> {
    let mut bytes = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > limit {
        return Err(over(path));
    }
    Ok(bytes)
}

fn too_large(path: &Path) -> LoadError {
    LoadError::TooLarge {
        path: path.to_owned(),
        limit: MAX_FILE_BYTES,
    }
}

/// The files of an MSP sub-folder, sorted by name so loading is deterministic: its regular
/// files and symbolic links to regular files (Kubernetes mounts secrets as links). Hidden
/// entries (`.gitkeep`, editor swap files, Kubernetes' `..data`) are skipped. Any other
/// entry, a link that leads nowhere, a sub-folder, a FIFO or a socket, is skipped with a
/// warning naming it and why, where Fabric's `getPemMaterialFromDir` warns only when it
/// cannot stat an entry (and would block on a FIFO): a certificate left out silently is
/// an organization refused later without a clue.
///
/// Public so that tools list a folder exactly as a node would (`fabric-gossip validate`).
pub fn msp_dir_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, LoadError> {
    let dir = dir.as_ref();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Err(e) => tracing::warn!("failed to stat {}: {e}; skipped", path.display()),
            Ok(meta) => match not_a_file(&meta) {
                None => out.push(path),
                Some(kind) => {
                    tracing::warn!("{}: not a regular file ({kind}); skipped", path.display());
                }
            },
        }
    }
    out.sort();
    Ok(out)
}

/// [`msp_dir_files`] of a sub-folder an MSP folder must fill (`cacerts/`, `signcerts/`,
/// `keystore/`): an empty one is [`LoadError::Empty`], naming the folder and what it lacks,
/// rather than an identity or a trust store silently missing its part.
pub(crate) fn required_pem_files(
    dir: &Path,
    expected: &'static str,
) -> Result<Vec<PathBuf>, LoadError> {
    let files = msp_dir_files(dir)?;
    if files.is_empty() {
        return Err(LoadError::Empty {
            path: dir.to_path_buf(),
            expected,
        });
    }
    Ok(files)
}

/// What the entry is when it is not a regular file (links already followed), in the words
/// of an error message; `None` for a regular file.
fn not_a_file(meta: &Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_file() {
        return None;
    }
    if kind.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Some("a FIFO");
        }
        if kind.is_socket() {
            return Some("a socket");
        }
        if kind.is_block_device() || kind.is_char_device() {
            return Some("a device");
        }
    }
    Some("not a file")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cap holds while reading, not only by the size seen before: a file that grows
    /// past it after its size was taken (here, one that never ends) is refused all the
    /// same, having been read one byte past the cap and no further.
    #[test]
    fn the_cap_is_enforced_while_reading() {
        let path = Path::new("growing.pem");
        let cap = usize::try_from(MAX_FILE_BYTES).expect("fits");
        let read = |r: Box<dyn Read>| read_capped(r, path, MAX_FILE_BYTES, too_large);
        let at_cap = read(Box::new(std::io::repeat(b'x').take(MAX_FILE_BYTES)));
        assert_eq!(at_cap.expect("at the cap").len(), cap);
        let e = read(Box::new(std::io::repeat(b'x'))).unwrap_err();
        assert!(
            matches!(&e, LoadError::TooLarge { path: p, limit } if p == path && *limit == MAX_FILE_BYTES),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "growing.pem: larger than 4194304 bytes, the most an MSP file may hold \
             (certificates, keys, CRLs and config.yaml take a few KiB)"
        );
    }

    /// The cap is the most a file may hold: a file of exactly that size is read, judged by
    /// its size as by what was read.
    #[test]
    fn a_file_at_the_cap_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bundle.pem");
        let file = std::fs::File::create(&path).expect("create");
        // Sparse: no disk is written.
        file.set_len(MAX_FILE_BYTES).expect("grow");
        let read = read_msp_file(&path).expect("at the cap");
        assert_eq!(read.len() as u64, MAX_FILE_BYTES);
    }

    /// A device is named as one (`/dev/null`, a character device, never ends for some).
    #[cfg(unix)]
    #[test]
    fn a_device_is_refused_as_a_device() {
        let e = read_msp_file("/dev/null").unwrap_err();
        assert!(
            matches!(
                &e,
                LoadError::NotAFile {
                    kind: "a device",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// A FIFO put where a file was, after the path was looked at, is not waited on: it is
    /// opened without blocking and refused as not a file. (A blocking open waits for a
    /// writer forever, so the old code hung here; the deadline turns that into a failure.)
    #[cfg(unix)]
    #[test]
    fn a_fifo_swapped_in_after_the_check_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("cert.pem");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("no mkfifo here; skipped");
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let opened = fifo.clone();
        std::thread::spawn(move || {
            let _ = tx.send(read_opened(&opened, MAX_FILE_BYTES, too_large));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("opening the FIFO blocked");
        assert!(
            matches!(&r, Err(LoadError::NotAFile { path, kind: "a FIFO" }) if *path == fifo),
            "{r:?}"
        );
    }

    /// A channel configuration block may be as large as a gRPC message Fabric accepts
    /// (far past an MSP file's cap), and no larger: a wrong path is refused by its size,
    /// before it is read, and a FIFO is not opened.
    #[test]
    fn a_channel_configuration_block_has_its_own_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = dir.path().join("config.block");
        let file = std::fs::File::create(&big).expect("create");
        // Sparse: no disk is written.
        file.set_len(MAX_FILE_BYTES + 1).expect("grow");
        assert_eq!(
            read_channel_config_file(&big)
                .expect("an MSP file's cap does not apply")
                .len() as u64,
            MAX_FILE_BYTES + 1
        );
        file.set_len(MAX_BLOCK_BYTES + 1).expect("grow");
        let e = read_channel_config_file(&big).unwrap_err();
        assert!(
            matches!(&e, LoadError::BlockTooLarge { path, limit } if *path == big && *limit == MAX_BLOCK_BYTES),
            "{e:?}"
        );
        assert!(e.to_string().contains("104857600 bytes"), "{e}");
        assert!(matches!(
            read_channel_config_file(dir.path()).unwrap_err(),
            LoadError::NotAFile {
                kind: "a directory",
                ..
            }
        ));
    }
}
