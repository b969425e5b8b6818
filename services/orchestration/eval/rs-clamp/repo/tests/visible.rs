use rs_clamp::clamp;
#[test]
fn above() { assert_eq!(clamp(15, 0, 10), 10); }
