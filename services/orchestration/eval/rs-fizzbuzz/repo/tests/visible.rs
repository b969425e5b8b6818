use rs_fizzbuzz::fizzbuzz;
#[test]
fn fifteen() { assert_eq!(fizzbuzz(15), "FizzBuzz"); }
