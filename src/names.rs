//! Lookup by name with "did you mean": the one helper every registry and option parser uses.

use crate::error::Error;

/// Levenshtein edit distance between two strings (by chars).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The valid name nearest to `name` (case-insensitive), if it is close enough to be a likely typo
/// (at most a third of its length in edits, and at least 2).
pub fn suggest<'a>(name: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = name.to_lowercase();
    let best = valid.into_iter().map(|v| (edit_distance(&lower, &v.to_lowercase()), v)).min_by_key(|(d, _)| *d)?;
    let limit = (name.chars().count() / 3).max(2);
    (best.0 <= limit).then(|| best.1.to_string())
}

/// Finds `name` among `(name, value)` pairs (case-insensitive), or returns [`Error::UnknownName`] with a
/// suggestion. `kind` names what is looked up (e.g. "interpolation").
///
/// ```
/// let table = [("linear", 1), ("nearest", 2)];
/// assert_eq!(regsh::names::lookup("interpolation", "Nearest", &table).unwrap(), 2);
/// let err = regsh::names::lookup("interpolation", "lienar", &table).unwrap_err();
/// assert_eq!(err.to_string(), "unknown interpolation `lienar`, did you mean `linear`?");
/// ```
pub fn lookup<T: Clone>(kind: &str, name: &str, table: &[(&str, T)]) -> Result<T, Error> {
    if let Some((_, v)) = table.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        return Ok(v.clone());
    }
    Err(Error::UnknownName {
        kind: kind.into(),
        name: name.into(),
        suggestion: suggest(name, table.iter().map(|(n, _)| *n)),
        valid: table.iter().map(|(n, _)| n.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("linear", "linear"), 0);
    }

    #[test]
    fn lookup_suggests_nearest() {
        let table = [("linear", 1), ("nearest", 2)];
        assert_eq!(lookup("interpolation", "Linear", &table).unwrap(), 1);
        match lookup("interpolation", "neares", &table) {
            Err(Error::UnknownName { suggestion, .. }) => assert_eq!(suggestion.as_deref(), Some("nearest")),
            other => panic!("expected UnknownName, got {other:?}"),
        }
        match lookup("interpolation", "cubicspline", &table) {
            Err(Error::UnknownName { suggestion, .. }) => assert_eq!(suggestion, None),
            other => panic!("expected UnknownName, got {other:?}"),
        }
    }
}
