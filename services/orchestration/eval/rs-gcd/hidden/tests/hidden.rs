use rs_gcd::gcd;
#[test]
fn common() { assert_eq!(gcd(12, 18), 6); }
