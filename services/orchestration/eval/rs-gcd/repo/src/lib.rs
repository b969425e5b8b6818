pub fn gcd(a: u64, b: u64) -> u64 {
    let r = a % b;
    if r == 0 { b } else { gcd(b, r) }
}
