//! "Did you mean": the known name nearest to one that is not known, when it is close enough to
//! be a typo (`enviroment` → `environment`). One rule for every name noco reads — compose keys
//! here, and stack, host and operator names wherever they are looked up.

/// The edit distance between `a` and `b` in characters: insertions, deletions, substitutions
/// and swaps of two neighbours each count one (optimal string alignment).
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the table: two back (for swaps), the previous one, the current one.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            current[j] = best;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// The name among `known` nearest to `word`, if it is close: at most one edit for every three
/// characters of `word` (at least one edit), compared without regard to case. Ties go to the
/// first in `known`. `None` when `word` is itself known.
pub fn nearest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = word.to_lowercase();
    let limit = (lowered.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in known {
        if candidate == word {
            return None;
        }
        let d = distance(&lowered, &candidate.to_lowercase());
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, name)| name)
}

/// `did you mean "environment"?` for the nearest known name, or nothing.
pub fn did_you_mean<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    nearest(word, known).map(|name| format!("did you mean {name:?}?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_insertions_deletions_substitutions_and_swaps() {
        let cases = [
            ("", "", 0),
            ("abc", "", 3),
            ("", "abc", 3),
            ("environment", "environment", 0),
            ("enviroment", "environment", 1),
            ("imgae", "image", 1),
            ("helthcheck", "healthcheck", 1),
            ("port", "ports", 1),
            ("kitten", "sitting", 3),
            ("ca", "abc", 3),
            ("ñandú", "nandu", 2),
        ];
        for (a, b, want) in cases {
            assert_eq!(distance(a, b), want, "{a:?} {b:?}");
            assert_eq!(distance(b, a), want, "{b:?} {a:?}");
        }
    }

    #[test]
    fn nearest_is_close_or_nothing() {
        let keys = [
            "image",
            "environment",
            "ports",
            "expose",
            "volumes",
            "networks",
        ];
        assert_eq!(nearest("enviroment", keys), Some("environment"));
        assert_eq!(nearest("Image", keys), Some("image"));
        assert_eq!(nearest("imgae", keys), Some("image"));
        assert_eq!(nearest("port", keys), Some("ports"));
        assert_eq!(nearest("volume", keys), Some("volumes"));
        assert_eq!(nearest("bogus", keys), None);
        assert_eq!(nearest("x", keys), None);
        assert_eq!(
            nearest("image", keys),
            None,
            "a known name needs no suggestion"
        );
        assert_eq!(nearest("", keys), None);
        assert_eq!(
            did_you_mean("netwroks", keys).as_deref(),
            Some("did you mean \"networks\"?")
        );
    }
}
