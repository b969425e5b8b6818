use rs_clamp::clamp;
#[test]
fn below_and_inside() { assert_eq!(clamp(-3, 0, 10), 0); assert_eq!(clamp(5, 0, 10), 5); }
