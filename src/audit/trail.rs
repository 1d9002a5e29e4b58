//! The trail id: a random name given to a trail when its first file is made, kept in
//! `<audit dir>/trail-id`, and part of every shipped object's key
//! (`<prefix>/<instance>/<trail id>/...`). A pod that loses its audit volume starts a new trail
//! under the same instance name; its id is new, so its objects never meet the old trail's
//! (which a locked bucket keeps, and which stay verifiable on their own).
//!
//! A file beside the trail rather than a field of its first record: local retention deletes old
//! audit files, the first one included, and the id must still be known after that. The file is
//! made before the trail's first audit file, so a directory with audit files and no id is a
//! trail made by an earlier release: it has none, and ships under its old keys
//! (`<prefix>/<instance>/...`).

use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The id's file, in the audit directory.
pub const TRAIL_ID_FILE: &str = "trail-id";

/// Random bytes in an id: 128 bits, so two trails never draw the same one.
const ID_BYTES: usize = 16;

/// Whether `text` is an id as [`establish`] makes them: 32 lowercase hex digits.
pub fn is_trail_id(text: &str) -> bool {
    text.len() == ID_BYTES * 2
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The trail id kept in `dir`; `None` when there is none (a trail made by an earlier release,
/// or no trail yet). A file that holds no valid id is an error: it must not become part of a
/// key. Blocks.
pub fn read_trail_id(dir: &Path) -> io::Result<Option<String>> {
    let text = match std::fs::read_to_string(dir.join(TRAIL_ID_FILE)) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let id = text.trim_end();
    if !is_trail_id(id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} does not hold a trail id (32 lowercase hex digits)",
                dir.join(TRAIL_ID_FILE).display()
            ),
        ));
    }
    Ok(Some(id.to_owned()))
}

/// The trail id of `dir`, made now (durably, before the first audit file) when the directory
/// holds no trail yet. `has_audit_files`: the directory already holds audit files, so a missing
/// id means an earlier release's trail, which keeps having none. Blocks.
pub(super) fn establish(dir: &Path, has_audit_files: bool) -> io::Result<Option<String>> {
    if let Some(id) = read_trail_id(dir)? {
        return Ok(Some(id));
    }
    if has_audit_files {
        return Ok(None);
    }
    let mut bytes = [0u8; ID_BYTES];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    let id = hex::encode(bytes);
    // Written whole or not at all: a torn id would name no trail.
    let temporary = dir.join(format!("{TRAIL_ID_FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(format!("{id}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(TRAIL_ID_FILE))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_trail_gets_an_id_it_keeps_and_an_old_trail_keeps_having_none() {
        let new = tempfile::tempdir().expect("tmp");
        let id = establish(new.path(), false)
            .expect("establish")
            .expect("an id");
        assert!(is_trail_id(&id), "{id}");
        assert_eq!(
            establish(new.path(), true).expect("again"),
            Some(id.clone())
        );
        assert_eq!(read_trail_id(new.path()).expect("read"), Some(id.clone()));

        let lost = tempfile::tempdir().expect("tmp");
        let other = establish(lost.path(), false).expect("establish");
        assert_ne!(other, Some(id), "a new volume, a new trail");

        let old = tempfile::tempdir().expect("tmp");
        assert_eq!(establish(old.path(), true).expect("old"), None);
        assert!(!old.path().join(TRAIL_ID_FILE).exists());
    }

    #[test]
    fn a_file_without_a_valid_id_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(TRAIL_ID_FILE), "../../other-instance\n").expect("write");
        assert!(read_trail_id(dir.path()).is_err());
        assert!(establish(dir.path(), false).is_err());
    }
}
