use rs_reverse_words::reverse_words;
#[test]
fn words() { assert_eq!(reverse_words("one two three"), "three two one"); }
