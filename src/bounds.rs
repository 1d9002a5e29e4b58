//! The one bounds check every configuration section uses, so each refusal reads the same:
//! `{key} = {value}: must be {min} to {max}`. A leaf module: the sections import it without
//! importing each other.

use std::ops::RangeInclusive;

/// `Err("{key} = {value}: must be {min} to {max}")` unless `range` holds `value`.
pub fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: &RangeInclusive<T>,
) -> Result<(), String> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key} = {value}: must be {} to {}",
            range.start(),
            range.end()
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_outside_the_range_names_the_key_and_the_bounds() {
        assert_eq!(super::in_range("a.b", 5, &(1..=5)), Ok(()));
        assert_eq!(
            super::in_range("a.b", 6, &(1..=5)),
            Err("a.b = 6: must be 1 to 5".to_owned())
        );
        assert!(super::in_range("a.b", 0, &(1..=5)).is_err());
    }
}
