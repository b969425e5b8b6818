use rs_parse_pair::parse_pair;
#[test]
fn none() { assert_eq!(parse_pair("no pair"), None); }
