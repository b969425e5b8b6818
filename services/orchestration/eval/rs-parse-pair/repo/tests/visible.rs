use rs_parse_pair::parse_pair;
#[test]
fn spaces() { assert_eq!(parse_pair("name = ada"), Some(("name".into(), "ada".into()))); }
