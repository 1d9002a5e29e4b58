//! Audit files on disk: their names, listing a directory's, and splitting one into lines.
//! Shared by the writer, crash recovery, `audit verify` and shipping.

use std::io;
use std::path::{Path, PathBuf};

/// `audit-` + the file's number, 20 digits, so that names sort in write order.
pub(crate) fn segment_name(number: u64) -> String {
    format!("audit-{number:020}.jsonl")
}

/// The number of an audit file's name, or `None` for other names.
pub(crate) fn segment_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The audit files of `dir`, oldest first.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(number) = entry.file_name().to_str().and_then(segment_number) {
            found.push((number, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The byte ranges of the complete (newline-terminated) lines of `bytes`, without newlines.
pub(crate) fn complete_lines(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' {
            lines.push((start, i));
            start = i + 1;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_number_order_and_other_names_are_no_audit_files() {
        assert_eq!(segment_number(&segment_name(7)), Some(7));
        assert!(segment_name(9) < segment_name(10));
        for other in [
            "audit-7.jsonl",
            "audit-0000000000000000000x.jsonl",
            "notes.txt",
        ] {
            assert_eq!(segment_number(other), None, "{other}");
        }
    }

    #[test]
    fn a_torn_last_line_is_not_a_complete_line() {
        assert_eq!(complete_lines(b"ab\ncd\nef"), [(0, 2), (3, 5)]);
    }
}
