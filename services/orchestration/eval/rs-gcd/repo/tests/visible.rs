use rs_gcd::gcd;
#[test]
fn zero() { assert_eq!(gcd(12, 0), 12); }
