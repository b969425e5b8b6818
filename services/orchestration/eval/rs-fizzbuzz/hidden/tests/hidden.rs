use rs_fizzbuzz::fizzbuzz;
#[test]
fn others() { assert_eq!((fizzbuzz(9), fizzbuzz(10), fizzbuzz(7)), ("Fizz".into(), "Buzz".into(), "7".to_string())); }
