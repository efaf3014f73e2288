//! Word error rate, for tests and benchmarks of transcription: the word-level edit distance
//! between a reference and a hypothesis after normalising both (case, punctuation, and number
//! words as digits, so "ten" and "10" are the same word).

/// Lower case, no punctuation, number words up to twenty as digits.
pub fn normalize(text: &str) -> Vec<String> {
    const NUMBERS: &[&str] = &[
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() || c == '\'' { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .map(|w| NUMBERS.iter().position(|n| *n == w).map(|i| i.to_string()).unwrap_or_else(|| w.to_string()))
        .collect()
}

/// Substitutions + insertions + deletions, and the reference's word count.
pub fn word_errors(reference: &str, hypothesis: &str) -> (usize, usize) {
    let (r, h) = (normalize(reference), normalize(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let prev = std::mem::replace(&mut row, vec![i + 1; h.len() + 1]);
        for (j, hw) in h.iter().enumerate() {
            row[j + 1] = (prev[j + 1] + 1).min(row[j] + 1).min(prev[j] + usize::from(rw != hw));
        }
    }
    (row[h.len()], r.len())
}

/// Errors over reference words (0 for an empty reference and hypothesis).
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let (e, n) = word_errors(reference, hypothesis);
    e as f64 / n.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_substitutions_insertions_and_deletions() {
        assert_eq!(word_errors("Set a timer for ten minutes.", "set a timer for 10 minutes"), (0, 6));
        assert_eq!(word_errors("the quick brown fox", "the quick round fox jumps"), (2, 4));
        assert_eq!(word_errors("open the door", ""), (3, 3));
        assert_eq!(word_errors("", "you"), (1, 0));
        assert_eq!(wer("a b c d", "a c d"), 0.25);
    }
}
