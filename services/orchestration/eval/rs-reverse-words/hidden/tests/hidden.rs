use rs_reverse_words::reverse_words;
#[test]
fn single() { assert_eq!(reverse_words("solo"), "solo"); }
