pub fn reverse_words(text: &str) -> String {
    text.chars().rev().collect()
}
