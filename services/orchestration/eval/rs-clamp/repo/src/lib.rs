pub fn clamp(value: i32, min: i32, max: i32) -> i32 {
    if value < min || value > max { min } else { value }
}
