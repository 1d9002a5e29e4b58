//! What the STS model and IAM allow in a role's settings: checked where a fixture defines a
//! role and where AssumeRole asks for a session, so both read the same numbers.

use super::arn::is_iam_name_char;

/// `roleDurationSecondsType`: 900 to 43200 (model).
pub(crate) const MIN_DURATION_SECS: u32 = 900;
pub(crate) const MAX_DURATION_SECS: u32 = 43200;
/// IAM's MaxSessionDuration is 1 to 12 hours (model, DurationSeconds).
pub(crate) const MIN_ROLE_MAX_DURATION_SECS: u32 = 3600;

/// `externalIdType`'s pattern `[\w+=,.@:\/-]*`.
pub(crate) fn is_external_id_char(c: char) -> bool {
    is_iam_name_char(c) || c == ':' || c == '/'
}

/// Whether an external id breaks `externalIdType` (2 to 1224, `[\w+=,.@:\/-]*`).
pub(crate) fn external_id_breaks_model(id: &str) -> bool {
    let len = id.chars().count();
    !(2..=1224).contains(&len) || !id.chars().all(is_external_id_char)
}
