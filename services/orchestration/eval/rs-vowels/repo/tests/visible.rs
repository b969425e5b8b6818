use rs_vowels::count_vowels;
#[test]
fn upper() { assert_eq!(count_vowels("AEIOU"), 5); }
