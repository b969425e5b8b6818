use rs_vowels::count_vowels;
#[test]
fn mixed() { assert_eq!(count_vowels("Hello World"), 3); }
